//! One SSH connection up to its MCP channel: key exchange and public-key
//! authentication under one login deadline, then one session channel with a
//! shell, exec or subsystem request. What follows belongs to the gateway.

use super::persource::{self, Ending, PerSource, Slot};
use super::sys::{Channel, Live, Request, Session};
use crate::audit::{AuditLog, SessionAudit};
use crate::gateway::select::Start;
use crate::keys::authorized::{Authorized, Grant};
use crate::keys::cert::{Authorities, Offer};
use crate::keys::command::{KeysCommand, Rerun};
use crate::keys::revoked::Revoked;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How clients log in; shared by every connection.
pub struct Login {
    pub authorized: Authorized,
    /// `--trusted-user-ca-keys`: CAs whose user certificates are accepted.
    pub cas: Option<Authorities>,
    /// `--revoked-keys`: keys refused however they are offered.
    pub revoked: Option<Revoked>,
    /// `--authorized-keys-command`: asked about plain keys no trust file lists.
    pub command: Option<KeysCommand>,
    /// `--audit-log`: refused keys get a `login_refused` record.
    pub audit: Option<Arc<AuditLog>>,
    /// Time for key exchange and authentication together.
    pub grace: Duration,
    /// libssh's own log verbosity for connection threads (`M2M_LIBSSH_LOG`).
    pub libssh_verbosity: i32,
}

const MAX_AUTH_ATTEMPTS: u32 = 20;

/// A connection's place among those still in key exchange or authentication,
/// in all (`--max-startups`) and from its source (`--per-source-max-startups`),
/// given back when it logs in or ends; its source's record learns how.
pub struct Startup {
    id: u64,
    count: Option<Arc<AtomicUsize>>,
    source: Option<(Arc<Mutex<PerSource>>, Slot)>,
}

impl Startup {
    /// Connection `id`'s place, counted in `count` and, as `slot`, in `table`.
    pub fn take(
        id: u64,
        count: &Arc<AtomicUsize>,
        table: &Arc<Mutex<PerSource>>,
        slot: Slot,
    ) -> Startup {
        let mut s = Startup::take_unsourced(id, count);
        s.set_source(table, slot);
        s
    }

    /// Like [`Startup::take`], with its source's place still to come: a
    /// PROXY header names the source later, on the connection's thread.
    pub fn take_unsourced(id: u64, count: &Arc<AtomicUsize>) -> Startup {
        count.fetch_add(1, Ordering::Relaxed);
        Startup {
            id,
            count: Some(count.clone()),
            source: None,
        }
    }

    /// The place of its source, as `slot` in `table`.
    pub fn set_source(&mut self, table: &Arc<Mutex<PerSource>>, slot: Slot) {
        self.source = Some((table.clone(), slot));
    }

    /// Gives the place back (once; later calls do nothing), logging the
    /// penalty that `ending` begins for the source, if any.
    fn end(&mut self, ending: Ending) {
        if let Some(c) = self.count.take() {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        let Some((table, slot)) = self.source.take() else {
            return;
        };
        let penalty = persource::lock(&table).end(slot, ending, Instant::now());
        if let Some(p) = penalty {
            log::warn!(
                "s{}: penalty: connections from {} refused for {} s after {} failed logins",
                self.id,
                p.source,
                p.length.as_secs(),
                p.failures
            );
        }
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.end(Ending::HungUp);
    }
}

/// An authenticated connection with its MCP channel open.
pub struct Established {
    pub live: Live,
    pub user: String,
    pub start: Start,
    /// What the client's key may use (its authorized_keys options).
    pub grant: Grant,
    /// The key it logged in with, plain or a certificate.
    pub key: Offer,
    /// Where the key was found.
    pub source: Source,
}

/// Where a login's key was found: what its open session re-checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--authorized-clients` or `--registered-clients`.
    Files,
    /// A certificate of a `--trusted-user-ca-keys` CA.
    Cert,
    /// The `--authorized-keys-command`'s output.
    Command,
}

/// Runs the handshake; None (after logging why) if the client did not get
/// as far as an MCP channel.
pub fn establish(
    session: Session,
    login: &Login,
    id: u64,
    peer: IpAddr,
    mut startup: Startup,
) -> Option<Established> {
    // One deadline for key exchange and authentication together, so a client
    // that trickles packets cannot hold a connection slot unauthenticated.
    let deadline = Instant::now() + login.grace;
    session.prepare(login.grace);
    if let Err(e) = session.handle_key_exchange() {
        let stalled = Instant::now() >= deadline;
        // A PROXY header where an SSH banner belongs: a balancer (or a
        // client posing as one) that --proxy-protocol-from does not list.
        let header = session
            .client_banner()
            .and_then(|b| super::proxy::header_banner(&b));
        // libssh leaves its message empty when the client went silent (the
        // login deadline) or hung up.
        match (header, e) {
            (Some(v), _) => log::warn!(
                "s{id}: refused: {peer} sent what starts as a PROXY {v} header, but \
                 --proxy-protocol-from does not list it"
            ),
            (None, crate::error::Error::Ssh { detail, .. }) if !detail.is_empty() => {
                log::info!("s{id}: key exchange failed: {detail}")
            }
            _ => log::info!(
                "s{id}: key exchange failed: the client hung up or stayed silent until the login deadline"
            ),
        }
        let ending = if stalled {
            Ending::Stalled
        } else {
            Ending::HungUp
        };
        startup.end(ending);
        return None;
    }
    let (user, grant, key, source) = match authenticate(&session, login, deadline, id, peer) {
        Ok(done) => done,
        Err(ending) => {
            session.disconnect();
            startup.end(ending);
            return None;
        }
    };
    startup.end(Ending::LoggedIn);
    // Channel setup gets its own bound per message, as key exchange had.
    session.set_timeout(login.grace);
    let Some((channel, start)) = open_channel(&session, id) else {
        session.disconnect();
        return None;
    };
    session.stop_queueing();
    session.clear_timeout();
    let channel = channel.into_raw();
    let mut live = match Live::new(session, channel) {
        Ok(l) => l,
        Err(e) => {
            log::error!("s{id}: {e}");
            return None;
        }
    };
    live.take_early();
    Some(Established {
        live,
        user,
        start,
        grant,
        key,
        source,
    })
}

/// Who logged in: the user, what the key may use, and the key.
type LoggedIn = (String, Grant, Offer, Source);

/// What the AuthorizedKeysCommand said about (user, key) in this login: it
/// runs once, though the probe and the signed request both ask.
type Asked = Option<((String, Vec<u8>), Result<Option<Grant>, String>)>;

/// Public-key auth only; every other method is refused. A listed key is
/// also checked against its `from=` and `expiry-time` options. Returns the
/// user, what the key may use, and the key; or how the login ended.
fn authenticate(
    session: &Session,
    login: &Login,
    deadline: Instant,
    id: u64,
    peer: IpAddr,
) -> Result<LoggedIn, Ending> {
    let mut attempts = 0;
    // Refused requests: keys, and other methods. The first of the latter is
    // usually `none`, the client asking which methods there are: no failure.
    let (mut keys_refused, mut others_refused) = (0, 0);
    let mut asked: Asked = None;
    while attempts < MAX_AUTH_ATTEMPTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Each wait gets only what is left of the deadline.
        session.set_timeout(left);
        let Some(msg) = session.next_message() else {
            break; // timed out, or the client went away
        };
        match msg.request() {
            Request::AuthPublicKey { signed } => {
                attempts += 1;
                let Some((kind, blob)) = msg.auth_key() else {
                    keys_refused += 1;
                    msg.reply_auth_denied();
                    continue;
                };
                let fp = crate::keys::fingerprint(&blob);
                let user = msg.auth_user();
                let offer = Offer::parse(&kind, blob);
                let verdict = offer
                    .as_ref()
                    .map_err(String::clone)
                    .and_then(|o| admit_login(login, &user, o, peer, deadline, &mut asked));
                match (verdict, offer, signed) {
                    (Ok(_), _, false) => msg.reply_pk_ok(),
                    (Ok((grant, source)), Ok(offer), true) => {
                        msg.reply_auth_success();
                        match source {
                            Source::Files => {}
                            Source::Cert => log::info!("s{id}: accepted {offer} for user {user:?}"),
                            Source::Command => log::info!(
                                "s{id}: accepted {offer} for user {user:?}: the AuthorizedKeysCommand lists it"
                            ),
                        }
                        return Ok((user, grant, offer, source));
                    }
                    (verdict, offer, _) => {
                        // Logged once per key: clients probe before they sign.
                        let why = verdict.err().unwrap_or_default();
                        if !signed {
                            match &offer {
                                Ok(o) => log::info!("s{id}: refused {o} from {peer}: {why}"),
                                Err(_) => {
                                    log::info!("s{id}: refused {kind} key {fp} from {peer}: {why}")
                                }
                            }
                            if let Some(a) = &login.audit {
                                let key = offer.as_ref().map_or(fp, Offer::fingerprint);
                                let cert = offer.as_ref().ok().and_then(Offer::cert);
                                let who = who(peer, &user, &key, None, cert);
                                let record = SessionAudit::new(a.clone(), id, who);
                                record
                                    .event("login_refused", &serde_json::json!({ "reason": why }));
                            }
                        }
                        keys_refused += 1;
                        msg.reply_auth_denied()
                    }
                }
            }
            Request::AuthOther => {
                attempts += 1;
                others_refused += 1;
                msg.reply_auth_denied();
            }
            _ => msg.reply_default(),
        }
    }
    log::info!("s{id}: authentication did not complete");
    Err(if Instant::now() >= deadline {
        Ending::Stalled
    } else if keys_refused > 0 || others_refused > 1 {
        Ending::Refused
    } else {
        Ending::HungUp
    })
}

/// Whether `login` lets `user` in with this key from `peer` now: its
/// grant, or why not. A revoked key (or CA) is refused first; a
/// certificate is checked against the trusted CAs only (as sshd: a
/// certificate never matches a plain authorized_keys line), a plain key
/// against the trust files. Asked at login and again while the session
/// lasts, so a key removed, revoked or expired (a certificate's too) loses
/// its open sessions.
pub fn admit(login: &Login, user: &str, offer: &Offer, peer: IpAddr) -> Result<Grant, String> {
    let now = SystemTime::now();
    check_revoked(login, offer)?;
    match offer {
        Offer::Cert(c) => match &login.cas {
            Some(cas) => cas.admit(c, user, peer, now),
            None => Err("certificates are not accepted (no --trusted-user-ca-keys)".into()),
        },
        Offer::Key { kind, blob } => admit_key(&login.authorized, kind, blob, peer, now),
    }
}

/// A revoked key, certified key or CA: why it is refused.
fn check_revoked(login: &Login, offer: &Offer) -> Result<(), String> {
    let Some(r) = &login.revoked else {
        return Ok(());
    };
    match offer {
        Offer::Key { blob, .. } => r.check(&[("key", blob)]),
        Offer::Cert(c) => r.check(&[("certified key", &c.key), ("CA key", &c.ca)]),
    }
}

/// Longest user name or certificate key id written to the audit log, in
/// characters.
const MAX_WHO: usize = 256;

/// Who a session or a refused login is, for the audit log: client, user,
/// key fingerprint, the key line's comment, and a certificate's id, serial
/// and CA.
pub fn who(
    peer: IpAddr,
    user: &str,
    key: &str,
    comment: Option<&str>,
    cert: Option<&crate::keys::cert::Cert>,
) -> serde_json::Value {
    // The user name and a certificate's key id come from the client before
    // it proved anything (a self-signed certificate parses): clipped, so a
    // refused login cannot write a long record.
    let clip = |s: &str| -> String {
        match s.char_indices().nth(MAX_WHO) {
            Some((at, _)) => format!("{}...", &s[..at]),
            None => s.to_owned(),
        }
    };
    let mut who = serde_json::json!({"client": peer.to_string(), "user": clip(user), "key": key});
    if let Some(c) = comment {
        who["comment"] = c.into();
    }
    if let Some(c) = cert {
        who["cert_id"] = clip(&c.key_id).into();
        who["cert_serial"] = c.serial.into();
        who["ca"] = c.ca_fingerprint().into();
    }
    who
}

/// [`admit`] at login, where a plain key that no trust file lists is
/// looked up with the AuthorizedKeysCommand (within the login `deadline`;
/// once per key, see [`Asked`]).
fn admit_login(
    login: &Login,
    user: &str,
    offer: &Offer,
    peer: IpAddr,
    deadline: Instant,
    asked: &mut Asked,
) -> Result<(Grant, Source), String> {
    let (Some(cmd), Offer::Key { kind, blob }) = (&login.command, offer) else {
        let source = if offer.cert().is_some() {
            Source::Cert
        } else {
            Source::Files
        };
        return admit(login, user, offer, peer).map(|g| (g, source));
    };
    if login.authorized.lookup(kind, blob).is_some() {
        return admit(login, user, offer, peer).map(|g| (g, Source::Files));
    }
    check_revoked(login, offer)?;
    let id = (user.to_owned(), blob.clone());
    let said = match asked {
        Some((k, said)) if *k == id => said.clone(),
        _ => {
            let said = cmd.lookup(user, kind, blob, deadline);
            *asked = Some((id, said.clone()));
            said
        }
    };
    match said {
        Err(why) => Err(format!("the AuthorizedKeysCommand failed: {why}")),
        Ok(None) => Err("not authorized (nor listed by the AuthorizedKeysCommand)".into()),
        Ok(Some(g)) => match g.check_login(peer, SystemTime::now()) {
            Ok(()) => Ok((g, Source::Command)),
            Err(why) => Err(why.to_string()),
        },
    }
}

/// How often an open session admitted by the AuthorizedKeysCommand runs
/// it again (every trust re-check would be a process every 2 s a session).
pub const COMMAND_RECHECK: Duration = Duration::from_secs(60);

/// The trust re-check of one open session (the gateway asks every 2 s).
/// Files and certificates are checked as at login (a stat of each file).
/// A key the AuthorizedKeysCommand admitted is checked against the
/// revocation list and its lines' `from=`/`expiry-time` each time, and the
/// command runs again every [`COMMAND_RECHECK`] ([`Rerun`]).
pub struct Recheck<'a> {
    login: &'a Login,
    user: String,
    offer: Offer,
    peer: IpAddr,
    rerun: Option<Rerun>,
}

impl<'a> Recheck<'a> {
    pub fn new(
        login: &'a Login,
        user: String,
        offer: Offer,
        source: Source,
        grant: Grant,
        peer: IpAddr,
    ) -> Recheck<'a> {
        let rerun = match (source, &login.command, &offer) {
            (Source::Command, Some(cmd), Offer::Key { kind, blob }) => {
                Some(Rerun::new(cmd, &user, kind, blob, grant, COMMAND_RECHECK))
            }
            _ => None,
        };
        Recheck {
            login,
            user,
            offer,
            peer,
            rerun,
        }
    }

    /// Ok while the key is still trusted; Err (why) ends the session.
    pub fn check(&self) -> Result<(), String> {
        let Some(rerun) = &self.rerun else {
            return admit(self.login, &self.user, &self.offer, self.peer).map(|_| ());
        };
        check_revoked(self.login, &self.offer)?;
        rerun
            .grant()?
            .check_login(self.peer, SystemTime::now())
            .map_err(|e| e.to_string())
    }
}

/// A plain key against the trust files.
fn admit_key(
    authorized: &Authorized,
    kind: &str,
    blob: &[u8],
    peer: IpAddr,
    now: SystemTime,
) -> Result<Grant, String> {
    match authorized.lookup(kind, blob) {
        None => Err("not authorized".to_owned()),
        Some(g) => match g.check_login(peer, now) {
            Ok(()) => Ok(g),
            Err(why) => Err(why.to_string()),
        },
    }
}

/// Accepts one session channel and its shell/exec/subsystem request.
fn open_channel<'s>(session: &'s Session, id: u64) -> Option<(Channel<'s>, Start)> {
    let mut channel: Option<Channel<'s>> = None;
    loop {
        let msg = session.next_message()?;
        let start = match msg.request() {
            Request::OpenSession if channel.is_none() => {
                channel = Some(msg.accept_channel()?);
                continue;
            }
            Request::Shell if channel.is_some() => Start::All,
            Request::Subsystem(name) if channel.is_some() && name == "mcp" => Start::All,
            Request::Exec(cmd) if channel.is_some() => Start::from_exec(&cmd),
            other => {
                log::debug!("s{id}: refused {other:?}");
                msg.reply_default();
                continue;
            }
        };
        msg.reply_success();
        return Some((channel?, start));
    }
}

/// Ends the channel as OpenSSH expects (exit-status, EOF, close), then
/// waits (200 ms at most) for the client's close, so OpenSSH sees a clean
/// end instead of "closed by remote host".
pub fn close_channel(live: &mut Live, status: i32) {
    if !live.connected() || live.inbound().closed {
        return;
    }
    live.finish(status);
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end && !live.inbound().closed && live.connected() {
        let left = end.saturating_duration_since(Instant::now()).as_millis() as i32;
        if live.poll(left.max(1)).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_are_clipped() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let long = "é".repeat(MAX_WHO + 10);
        let w = who(ip, &long, "SHA256:k", Some("c"), None);
        let user = w["user"].as_str().unwrap();
        assert_eq!(user.chars().count(), MAX_WHO + 3);
        assert!(user.ends_with("é..."));
        assert_eq!(w["comment"], "c");
        assert!(w.get("cert_id").is_none());
        let short = who(ip, "mcp", "SHA256:k", None, None);
        assert_eq!(short["user"], "mcp");
        assert!(short.get("comment").is_none());
    }
}
