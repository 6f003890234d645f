//! Local wall-clock time to Unix time, for `expiry-time` in authorized_keys:
//! std has no time-zone support, so this asks libc's `mktime`.

/// Unix seconds of the local wall-clock time `y-mo-d h:mi:s` in the system
/// time zone (`TZ`, else `/etc/localtime`), with daylight saving time as the
/// zone's rules have it on that date (`tm_isdst = -1`). A time skipped by a
/// DST change is moved forward as `mktime` does. None when a field is out of
/// range, the date does not exist (`mktime` would roll it over) or the time
/// cannot be represented.
pub fn local_to_unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let int = |v: u32| libc::c_int::try_from(v).ok();
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // SAFETY: `libc::tm` is a plain C struct of integers plus (on glibc) a
    // `tm_zone` pointer that mktime only writes; all-zero bytes are a valid
    // value for every field.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let date = (y.checked_sub(1900)?, int(mo - 1)?, int(d)?);
    (tm.tm_year, tm.tm_mon, tm.tm_mday) = date;
    tm.tm_hour = int(h)?;
    tm.tm_min = int(mi)?;
    tm.tm_sec = int(s)?;
    tm.tm_isdst = -1;
    tm.tm_wday = -1; // mktime sets it on success: tells an error from 1969-12-31 23:59:59
    // SAFETY: `&mut tm` is a valid, initialised, exclusively borrowed `tm`
    // for the whole call; mktime normalises it in place, reads the process
    // time zone and keeps no pointer to it. Its only data race is with a
    // concurrent change of `TZ` (setenv), which safe Rust cannot do and this
    // crate never does.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 && tm.tm_wday == -1 {
        return None;
    }
    // A date mktime had to roll over (February 30) was not a real date.
    if (tm.tm_year, tm.tm_mon, tm.tm_mday) != date {
        return None;
    }
    #[allow(clippy::useless_conversion)] // time_t is i32 on some 32-bit targets
    let t: i64 = t.into();
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_utc_and_ordered() {
        // 2030-01-02 00:00:00 UTC; every real zone is within -12..+14 hours.
        let t = local_to_unix(2030, 1, 2, 0, 0, 0).unwrap();
        assert!((t - 1_893_542_400).abs() <= 14 * 3600, "{t}");
        assert_eq!(local_to_unix(2030, 1, 2, 0, 0, 1), Some(t + 1));
        assert_eq!(local_to_unix(2030, 1, 2, 1, 0, 0), Some(t + 3600));
    }

    #[test]
    fn follows_the_zone_and_its_dst() {
        // TZ can be set safely only before a process starts: run this test
        // again in a child with a POSIX zone string (needs no tzdata).
        const NAME: &str = "os::localtime::tests::follows_the_zone_and_its_dst";
        if std::env::var_os("M2M_TZ_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env("TZ", "EST5EDT,M3.2.0,M11.1.0")
                .env("M2M_TZ_CHILD", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        // Winter: UTC-5; summer: UTC-4 (2030-01-02 05:00Z, 2030-07-01 16:00Z).
        assert_eq!(local_to_unix(2030, 1, 2, 0, 0, 0), Some(1_893_560_400));
        assert_eq!(local_to_unix(2030, 7, 1, 12, 0, 0), Some(1_909_152_000));
        // 02:30 on 2030-03-10 does not exist there: moved by an hour either way.
        let gap = local_to_unix(2030, 3, 10, 2, 30, 0).unwrap();
        assert!((gap - 1_899_358_200).abs() <= 3600, "{gap}");
    }

    #[test]
    fn refuses_impossible_dates() {
        assert_eq!(local_to_unix(2030, 2, 30, 0, 0, 0), None);
        assert_eq!(local_to_unix(2030, 13, 1, 0, 0, 0), None);
        assert_eq!(local_to_unix(2030, 0, 1, 0, 0, 0), None);
        assert_eq!(local_to_unix(2030, 1, 0, 0, 0, 0), None);
        assert_eq!(local_to_unix(2030, 1, 1, 24, 0, 0), None);
        assert_eq!(local_to_unix(i32::MIN, 1, 1, 0, 0, 0), None);
        assert!(local_to_unix(2028, 2, 29, 12, 0, 0).is_some());
    }
}
