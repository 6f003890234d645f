//! `--audit-log PATH`: one JSON line per session start and end, per
//! refused login key (`login_refused`, written by `ssh::conn`), and per
//! `tools/call`, `prompts/get`, `resources/read` and refused request: who
//! (session, client address, user, key fingerprint and comment; for a
//! certificate also `cert_id`, `cert_serial` and `ca`), what
//! (server, method, tool, prompt or URI), how long, how it ended, and the
//! bytes each way. Never arguments or results.
//!
//! Each record is one `write(2)` on a file opened with `O_APPEND`, so lines
//! from many sessions never interleave, and nothing is buffered: a record
//! is on its way to the disk when the call returns. A write that fails (a
//! full disk) loses that record; the failure is counted and logged (the
//! first and then every 1000th), and the session goes on: the log never
//! stalls or ends a session. SIGHUP reopens the file (logrotate's
//! convention).

use crate::error::Error;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    failures: AtomicU64,
}

fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open the audit log {}", path.display()), e))
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(open(path)?),
            failures: AtomicU64::new(0),
        })
    }

    /// After SIGHUP: a rotated file is left to its rotator, new records go
    /// to a fresh file at the same path. On failure the old file stays.
    pub fn reopen(&self) {
        match open(&self.path) {
            Ok(f) => *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f,
            Err(e) => log::error!("{e}; still writing to the previous file"),
        }
    }

    /// Writes one record: a complete line of JSON.
    fn write_line(&self, line: &[u8]) {
        let res = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line);
        if let Err(e) = res {
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n % 1000 == 0 {
                log::error!(
                    "audit log {}: {e}; {n} record(s) lost so far",
                    self.path.display()
                );
            }
        }
    }

    /// Records lost to write errors since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Who a session is, for every record of it.
pub struct SessionAudit {
    pub log: std::sync::Arc<AuditLog>,
    /// `session` and who's members as JSON text (no braces): written once,
    /// then copied into each record (a record per call is on the call's
    /// path; building it as a map cost more than the call).
    who: Vec<u8>,
}

impl SessionAudit {
    pub fn new(log: std::sync::Arc<AuditLog>, session: u64, who: Value) -> SessionAudit {
        let mut m = Map::new();
        m.insert("session".into(), json!(session));
        if let Value::Object(w) = who {
            m.extend(w);
        }
        SessionAudit {
            log,
            who: members(&m),
        }
    }

    /// A record of this session: `time`, `event`, who, then `fields` (an
    /// object; its keys are none of who's).
    pub fn event(&self, event: &str, fields: &impl Serialize) {
        let mut line = Vec::with_capacity(256 + self.who.len());
        line.extend_from_slice(b"{\"time\":\"");
        rfc3339_into(SystemTime::now(), &mut line);
        line.extend_from_slice(b"\",\"event\":");
        let _ = serde_json::to_writer(&mut line, event); // a Vec never fails
        if !self.who.is_empty() {
            line.push(b',');
            line.extend_from_slice(&self.who);
        }
        // The fields' own `{` becomes the separator and their `}` closes
        // the record.
        let at = line.len();
        let _ = serde_json::to_writer(&mut line, fields);
        if line.len() - at > 2 && line[at] == b'{' {
            line[at] = b',';
        } else {
            line.truncate(at);
            line.push(b'}');
        }
        line.push(b'\n');
        self.log.write_line(&line);
    }
}

/// The members of an object's JSON text, without its braces (empty for
/// anything that is not an object).
fn members(v: &impl Serialize) -> Vec<u8> {
    let text = serde_json::to_vec(v).unwrap_or_default();
    match text.as_slice() {
        [b'{', inner @ .., b'}'] => inner.to_vec(),
        _ => Vec::new(),
    }
}

/// `2026-11-30T15:04:05.123Z`: UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// [`rfc3339`] appended to `out`, its digits written by hand: every audit
/// record has one, and `format!` cost more than the rest of the record.
fn rfc3339_into(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    let Ok(y @ 0..=9999) = u64::try_from(y) else {
        out.extend_from_slice(rfc3339(t).as_bytes());
        return;
    };
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    let rem = rem as u64;
    put(0, 4, y);
    put(5, 2, m.into());
    put(8, 2, dd.into());
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, d.subsec_millis().into());
    out.extend_from_slice(&buf);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_054_645, 999), "2026-11-30T16:04:05.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        let mut s = 1u64;
        for ms in 0..2000u64 {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 400_000_000_000;
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms % 1000);
            let mut fast = Vec::new();
            rfc3339_into(t, &mut fast);
            assert_eq!(String::from_utf8(fast).unwrap(), rfc3339(t), "{s}");
        }
    }

    #[test]
    fn records_append_as_lines_and_a_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("m2m-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let log = std::sync::Arc::new(AuditLog::open(&path).unwrap());
        let s = SessionAudit::new(log.clone(), 7, json!({"client": "127.0.0.1"}));
        s.event("session_start", &json!({"servers": ["a"]}));
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        log.reopen();
        s.event("session_end", &json!({}));
        let old = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let a: Value = serde_json::from_str(old.trim()).unwrap();
        assert_eq!(a["event"], "session_start");
        assert_eq!(
            (a["session"].clone(), a["client"].clone()),
            (json!(7), json!("127.0.0.1"))
        );
        assert!(a["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            serde_json::from_str::<Value>(new.trim()).unwrap()["event"],
            "session_end"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(log.failures(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_is_time_event_who_then_fields_in_order() {
        let dir = std::env::temp_dir().join(format!("m2m-audit-order-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("audit.log");
        let log = std::sync::Arc::new(AuditLog::open(&path).unwrap());
        let who = json!({"client": "::1", "user": "u\"q", "key": "SHA256:x"});
        let s = SessionAudit::new(log.clone(), 9, who);
        s.event("request", &json!({"server": "a", "code": -1}));
        s.event("session_end", &json!({}));
        SessionAudit::new(log, 10, json!(null)).event("x", &json!([1]));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Map<String, Value>> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>().join(",");
        assert_eq!(
            keys(&lines[0]),
            "time,event,session,client,user,key,server,code"
        );
        assert_eq!(lines[0]["user"], "u\"q");
        assert_eq!(lines[0]["code"], -1);
        assert_eq!(keys(&lines[1]), "time,event,session,client,user,key");
        assert_eq!(
            keys(&lines[2]),
            "time,event,session",
            "what is no object adds nothing"
        );
        assert_eq!(text.lines().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_write_is_counted_and_never_blocks() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let log = AuditLog {
            path: "/dev/full".into(),
            file: Mutex::new(OpenOptions::new().append(true).open("/dev/full").unwrap()),
            failures: AtomicU64::new(0),
        };
        let s = SessionAudit::new(std::sync::Arc::new(log), 1, json!({}));
        s.event("a", &json!({}));
        s.event("b", &json!({}));
        let log = &s.log;
        assert_eq!(log.failures(), 2);
    }
}
