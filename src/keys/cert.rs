//! OpenSSH user certificates (`*-cert-v01@openssh.com`; the format is
//! PROTOCOL.certkeys in openssh-portable) and the `--trusted-user-ca-keys`
//! file (sshd's `TrustedUserCAKeys`).
//!
//! libssh hands the server the whole certificate as the offered key and
//! checks the client's signature with the key inside it (libssh 0.10.6,
//! `pki_import_cert_buffer` and `ssh_pki_signature_verify`). Everything
//! else is checked here, as sshd does: the CA's signature, that it is a
//! user certificate, its validity window, its principals, its critical
//! options, and that the CA is trusted.
//!
//! Only ed25519 CAs are verified (with ed25519-dalek); a certificate signed
//! by an RSA or ECDSA CA is refused with a message saying so, and such a CA
//! line is left out of the file with a warning. The RustCrypto `ssh-key`
//! crate would verify more kinds, but its only version that shares our
//! ed25519-dalek 3 / sha2 0.11 is a release candidate (0.7.0-rc.12) whose
//! `ctutils` needs Rust 1.87 (this crate promises 1.85), and parsing and
//! validating with it added 99 KB to the 1.31 MB release binary, more than
//! this whole feature (75 KB); the format is plain SSH wire encoding.
//!
//! Critical options: `force-command` limits the servers as a key's
//! `command=` does (a list of configured server names), `source-address`
//! limits client addresses as `from=` does (addresses and CIDR blocks, as in
//! sshd). Any other critical option refuses the certificate, as in sshd.
//! Extensions (`permit-pty` and the like) grant nothing here and are
//! ignored.

use super::authorized::{Authorized, Grant, Listing};
use super::options::{KeyOptions, server_names};
use super::pattern::AddrPatterns;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The suffix of every certificate key type.
const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// Certificate types (PROTOCOL.certkeys).
const USER_CERT: u32 = 1;
const HOST_CERT: u32 = 2;

/// Whether `kind` names an OpenSSH certificate type.
pub fn is_cert_type(kind: &str) -> bool {
    kind.ends_with(CERT_SUFFIX)
}

/// A parsed certificate whose CA signature has been verified: well formed
/// and signed by [`Cert::ca`]. Whether that CA is trusted, and whether the
/// certificate admits this login now, is [`Authorities::admit`]'s question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// The certificate type, e.g. `ssh-ed25519-cert-v01@openssh.com`.
    pub kind: String,
    /// The certified key as a plain key's type and blob (what a plain
    /// login with it offers): for fingerprints and the revocation list.
    pub key_kind: String,
    pub key: Vec<u8>,
    pub serial: u64,
    /// 1 for a user certificate, 2 for a host certificate.
    pub cert_type: u32,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    /// `force-command`: the only servers this certificate may use.
    pub force_command: Option<BTreeSet<String>>,
    /// `source-address`: the client addresses it may come from.
    pub source_address: Option<AddrPatterns>,
    /// The CA's public key blob (always `ssh-ed25519`).
    pub ca: Vec<u8>,
}

/// A reader over SSH wire-format fields; every error is a truncation.
struct Wire<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Wire<'a> {
        Wire { buf, at: 0 }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("certificate is truncated")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let s = self.string()?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| format!("certificate {what} is not UTF-8"))
    }

    fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// Shortens text from a certificate for a log line.
fn shown(s: &str) -> String {
    let s: String = s.chars().take(64).collect();
    format!("{s:?}")
}

/// The plain key type of a certificate type, and the number of SSH strings
/// (or mpints) that make up its key after the nonce.
fn plain_type(kind: &str) -> Option<(String, usize)> {
    let base = kind.strip_suffix(CERT_SUFFIX)?;
    Some(match base {
        "ssh-ed25519" => (base.to_owned(), 1),
        "ssh-rsa" => (base.to_owned(), 2),
        "ssh-dss" => (base.to_owned(), 4),
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => {
            (base.to_owned(), 2)
        }
        "sk-ssh-ed25519" => ("sk-ssh-ed25519@openssh.com".to_owned(), 2),
        "sk-ecdsa-sha2-nistp256" => ("sk-ecdsa-sha2-nistp256@openssh.com".to_owned(), 3),
        _ => return None,
    })
}

/// The certified key of a certificate blob as (plain type, plain blob),
/// without checking anything else: what the revocation list needs.
pub fn certified_key(blob: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut w = Wire::new(blob);
    certified_key_from(&mut w)
}

fn certified_key_from(w: &mut Wire<'_>) -> Result<(String, Vec<u8>), String> {
    let kind = std::str::from_utf8(w.string()?).unwrap_or("");
    let Some((plain, fields)) = plain_type(kind) else {
        return Err(format!("unknown certificate type {}", shown(kind)));
    };
    w.string()?; // nonce
    let start = w.at;
    for _ in 0..fields {
        w.string()?;
    }
    let mut key = Vec::with_capacity(4 + plain.len() + w.at - start);
    super::put_string(&mut key, plain.as_bytes());
    key.extend_from_slice(&w.buf[start..w.at]);
    Ok((plain, key))
}

impl Cert {
    /// Parses a certificate blob and verifies its CA signature. Refuses a
    /// CA other than ed25519, a malformed or unknown critical option, and
    /// anything malformed, each with a message saying what.
    pub fn parse(blob: &[u8]) -> Result<Cert, String> {
        let mut w = Wire::new(blob);
        let (key_kind, key) = certified_key_from(&mut w)?;
        let kind = std::str::from_utf8(Wire::new(blob).string()?)
            .unwrap_or("")
            .to_owned();
        let serial = w.u64()?;
        let cert_type = w.u32()?;
        let key_id = w.text("key id")?;
        let mut principals = Vec::new();
        let mut list = Wire::new(w.string()?);
        while !list.done() {
            principals.push(list.text("principal")?);
        }
        let valid_after = w.u64()?;
        let valid_before = w.u64()?;
        let critical = w.string()?;
        w.string()?; // extensions: nothing here needs them
        w.string()?; // reserved
        let ca = w.string()?.to_vec();
        let signed = w.at;
        let signature = w.string()?;
        if !w.done() {
            return Err("certificate has trailing bytes".into());
        }
        verify_ca_signature(&ca, &blob[..signed], signature)?;
        let (force_command, source_address) = critical_options(critical)?;
        Ok(Cert {
            kind,
            key_kind,
            key,
            serial,
            cert_type,
            key_id,
            principals,
            valid_after,
            valid_before,
            force_command,
            source_address,
            ca,
        })
    }

    /// The certified key's fingerprint (as `ssh-keygen -l` prints it for
    /// the certificate file).
    pub fn fingerprint(&self) -> String {
        super::fingerprint(&self.key)
    }

    /// The CA key's fingerprint.
    pub fn ca_fingerprint(&self) -> String {
        super::fingerprint(&self.ca)
    }

    /// Whether the validity window holds at `now`: `valid_after <= now <
    /// valid_before`, as sshd.
    pub fn check_time(&self, now: SystemTime) -> Result<(), String> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs < self.valid_after {
            return Err(format!(
                "certificate is not valid yet (valid after {})",
                crate::audit::rfc3339(
                    UNIX_EPOCH + std::time::Duration::from_secs(self.valid_after)
                )
            ));
        }
        if secs >= self.valid_before {
            return Err(format!(
                "certificate expired (valid before {})",
                crate::audit::rfc3339(
                    UNIX_EPOCH + std::time::Duration::from_secs(self.valid_before)
                )
            ));
        }
        Ok(())
    }
}

/// For logs: `ID "alice" (serial 7) CA SHA256:...`, as sshd names a
/// certificate.
impl fmt::Display for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate ID {} (serial {}) of key {} signed by CA {}",
            shown(&self.key_id),
            self.serial,
            self.fingerprint(),
            self.ca_fingerprint()
        )
    }
}

/// Verifies the CA's signature over `signed` (the certificate up to and
/// including the CA key) with ed25519-dalek; other CA types are refused.
fn verify_ca_signature(ca: &[u8], signed: &[u8], signature: &[u8]) -> Result<(), String> {
    let mut k = Wire::new(ca);
    let ca_type = std::str::from_utf8(k.string()?).unwrap_or("?").to_owned();
    if ca_type != "ssh-ed25519" {
        return Err(format!(
            "signed by a {} CA: only ssh-ed25519 CA keys are supported",
            shown(&ca_type)
        ));
    }
    let public: [u8; 32] = k
        .string()?
        .try_into()
        .map_err(|_| "CA key is not a 32-byte ed25519 key")?;
    if !k.done() {
        return Err("CA key has trailing bytes".into());
    }
    let mut s = Wire::new(signature);
    let alg = s.string()?;
    let sig: [u8; 64] = s
        .string()?
        .try_into()
        .map_err(|_| "CA signature is not a 64-byte ed25519 signature")?;
    if alg != b"ssh-ed25519" || !s.done() {
        return Err("CA signature is not an ssh-ed25519 signature".into());
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|_| "CA key is not a valid ed25519 point")?;
    key.verify_strict(signed, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| "the CA signature does not verify".to_owned())
}

/// Interprets the critical options: (`force-command`, `source-address`).
type Critical = (Option<BTreeSet<String>>, Option<AddrPatterns>);

fn critical_options(data: &[u8]) -> Result<Critical, String> {
    let mut w = Wire::new(data);
    let (mut force, mut source) = (None, None);
    let mut last: Option<String> = None;
    while !w.done() {
        let name = w.text("critical option name")?;
        // Each value is a string wrapped in the option's data string.
        let mut inner = Wire::new(w.string()?);
        if last.as_ref().is_some_and(|l| *l >= name) {
            return Err(format!(
                "critical option {} is out of order or repeated",
                shown(&name)
            ));
        }
        let mut value = || -> Result<String, String> {
            let v = inner.text("critical option value")?;
            if inner.done() {
                Ok(v)
            } else {
                Err(format!("critical option {} is malformed", shown(&name)))
            }
        };
        match name.as_str() {
            "force-command" => {
                let v = value()?;
                force = Some(
                    server_names(&v)
                        .map_err(|why| format!("critical option force-command: {why}"))?,
                );
            }
            "source-address" => {
                let v = value()?;
                source = Some(
                    AddrPatterns::parse_cidr_list(&v)
                        .map_err(|why| format!("critical option source-address: {why}"))?,
                );
            }
            _ => {
                return Err(format!(
                    "unknown critical option {}: refused, as sshd does",
                    shown(&name)
                ));
            }
        }
        last = Some(name);
    }
    Ok((force, source))
}

/// The key a client offers: a plain key, or a certificate (parsed and its
/// CA signature verified once, at login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    Key { kind: String, blob: Vec<u8> },
    Cert(Box<Cert>),
}

impl Offer {
    /// The offer of a key of type `kind` with this blob; Err (why) for a
    /// certificate that does not parse or verify.
    pub fn parse(kind: &str, blob: Vec<u8>) -> Result<Offer, String> {
        if is_cert_type(kind) {
            Cert::parse(&blob).map(|c| Offer::Cert(Box::new(c)))
        } else {
            Ok(Offer::Key {
                kind: kind.to_owned(),
                blob,
            })
        }
    }

    /// The plain key: (type, blob); a certificate's certified key.
    pub fn key(&self) -> (&str, &[u8]) {
        match self {
            Offer::Key { kind, blob } => (kind, blob),
            Offer::Cert(c) => (&c.key_kind, &c.key),
        }
    }

    /// The plain key's fingerprint.
    pub fn fingerprint(&self) -> String {
        super::fingerprint(self.key().1)
    }

    pub fn cert(&self) -> Option<&Cert> {
        match self {
            Offer::Cert(c) => Some(c),
            Offer::Key { .. } => None,
        }
    }
}

/// For logs: `ssh-ed25519 key SHA256:...`, or the certificate.
impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offer::Key { kind, blob } => write!(f, "{kind} key {}", super::fingerprint(blob)),
            Offer::Cert(c) => c.fmt(f),
        }
    }
}

/// The `--trusted-user-ca-keys` file: CA public keys in authorized_keys
/// format, one a line, with options that apply to every certificate the CA
/// signs (see [`super::options`], including `principals=`). Re-read when it
/// changes. A CA listed on several lines gets what every line allows.
pub struct Authorities {
    path: PathBuf,
    store: Authorized,
}

impl Authorities {
    pub fn new(path: PathBuf) -> Authorities {
        Authorities {
            store: Authorized::cas(path.clone()),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of trusted CA keys (for the start-up log line).
    pub fn count(&self) -> usize {
        self.store.count()
    }

    /// Whether `cert` lets `user` in from `peer` at `now`: the grant (the
    /// CA lines' options, then the certificate's `force-command`), or why
    /// not. Cheap (a stat of the file and a few comparisons), so it is also
    /// the re-check of an open session.
    pub fn admit(
        &self,
        cert: &Cert,
        user: &str,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<Grant, String> {
        match cert.cert_type {
            USER_CERT => {}
            HOST_CERT => return Err("a host certificate, not a user certificate".into()),
            t => return Err(format!("unknown certificate type {t}")),
        }
        let Some(grant) = self.store.lookup("ssh-ed25519", &cert.ca) else {
            return Err(format!("its CA is not listed in {}", self.path.display()));
        };
        cert.check_time(now)?;
        if cert.principals.is_empty() {
            return Err("certificate lists no principals".into());
        }
        for l in grant.listings() {
            let ok = match &l.options.principals {
                None => cert.principals.iter().any(|p| p == user),
                Some(p) => p.admits(&cert.principals),
            };
            if !ok {
                let wanted = match &l.options.principals {
                    None => format!("user name {}", shown(user)),
                    Some(_) => format!("principals= at {}:{}", l.path.display(), l.line),
                };
                return Err(format!(
                    "certificate principals {:?} do not include the {wanted}",
                    cert.principals
                ));
            }
        }
        if let Some(src) = &cert.source_address
            && !src.matches(peer)
        {
            return Err(format!(
                "client address {peer} is not in the certificate's source-address"
            ));
        }
        grant.check_login(peer, now).map_err(|e| e.to_string())?;
        let Some(servers) = &cert.force_command else {
            return Ok(grant);
        };
        // A grant has at least one listing; the certificate's options are
        // shown as coming from its CA's line.
        let (path, line) = grant
            .listings()
            .first()
            .map(|l| (l.path.clone(), l.line))
            .unwrap_or_default();
        Ok(grant.with(Listing {
            path,
            line,
            comment: format!("force-command of {cert}"),
            options: KeyOptions {
                servers: Some(servers.clone()),
                ..KeyOptions::default()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::put_string;
    use ed25519_dalek::{Signer, SigningKey};

    /// A certificate as `ssh-keygen -s` builds one, for tests.
    struct Spec {
        cert_type: u32,
        principals: Vec<&'static str>,
        valid: (u64, u64),
        critical: Vec<(&'static str, &'static str)>,
        key_id: &'static str,
        serial: u64,
    }

    impl Default for Spec {
        fn default() -> Spec {
            Spec {
                cert_type: USER_CERT,
                principals: vec!["mcp"],
                valid: (0, u64::MAX),
                critical: vec![],
                key_id: "alice",
                serial: 7,
            }
        }
    }

    fn string_of(data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_string(&mut v, data);
        v
    }

    /// (certificate blob, user public key, CA blob).
    fn sign(ca: &SigningKey, spec: &Spec) -> (Vec<u8>, [u8; 32], Vec<u8>) {
        let user = SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes();
        let mut b = Vec::new();
        put_string(&mut b, b"ssh-ed25519-cert-v01@openssh.com");
        put_string(&mut b, &[1u8; 32]);
        put_string(&mut b, &user);
        b.extend_from_slice(&spec.serial.to_be_bytes());
        b.extend_from_slice(&spec.cert_type.to_be_bytes());
        put_string(&mut b, spec.key_id.as_bytes());
        let mut p = Vec::new();
        for n in &spec.principals {
            put_string(&mut p, n.as_bytes());
        }
        put_string(&mut b, &p);
        b.extend_from_slice(&spec.valid.0.to_be_bytes());
        b.extend_from_slice(&spec.valid.1.to_be_bytes());
        let mut c = Vec::new();
        for (n, v) in &spec.critical {
            put_string(&mut c, n.as_bytes());
            put_string(&mut c, &string_of(v.as_bytes()));
        }
        put_string(&mut b, &c);
        let mut ext = Vec::new();
        put_string(&mut ext, b"permit-pty");
        put_string(&mut ext, b"");
        put_string(&mut b, &ext);
        put_string(&mut b, b"");
        let ca_blob = crate::keys::ed25519_blob(&ca.verifying_key().to_bytes());
        put_string(&mut b, &ca_blob);
        let sig = ca.sign(&b).to_bytes();
        let mut s = Vec::new();
        put_string(&mut s, b"ssh-ed25519");
        put_string(&mut s, &sig);
        put_string(&mut b, &s);
        (b, user, ca_blob)
    }

    fn ca() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A CA file holding `lines` (each `{ca}` replaced by the CA's line).
    struct CaFile {
        dir: PathBuf,
        cas: Authorities,
    }

    impl CaFile {
        fn new(tag: &str, lines: &str) -> CaFile {
            let dir = std::env::temp_dir().join(format!("m2m-cert-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca_line = crate::keys::PublicKey {
                kind: "ssh-ed25519".into(),
                blob: crate::keys::ed25519_blob(&ca().verifying_key().to_bytes()),
                comment: "ca".into(),
            }
            .to_line();
            let path = dir.join("cas");
            std::fs::write(&path, lines.replace("{ca}", &ca_line)).unwrap();
            CaFile {
                cas: Authorities::new(path),
                dir,
            }
        }
    }

    impl Drop for CaFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn parses_and_verifies_a_certificate() {
        let spec = Spec {
            critical: vec![
                ("force-command", "time, fs"),
                ("source-address", "10.0.0.0/8,::1"),
            ],
            ..Spec::default()
        };
        let (blob, user, ca_blob) = sign(&ca(), &spec);
        let c = Cert::parse(&blob).unwrap();
        assert_eq!(c.kind, "ssh-ed25519-cert-v01@openssh.com");
        assert_eq!(c.key_kind, "ssh-ed25519");
        assert_eq!(c.key, crate::keys::ed25519_blob(&user));
        assert_eq!(certified_key(&blob).unwrap().1, c.key);
        assert_eq!((c.serial, c.cert_type, c.key_id.as_str()), (7, 1, "alice"));
        assert_eq!(c.principals, ["mcp"]);
        assert_eq!(c.ca, ca_blob);
        let servers: Vec<_> = c.force_command.iter().flatten().collect();
        assert_eq!(servers, ["fs", "time"]);
        let src = c.source_address.as_ref().unwrap();
        assert!(src.matches(ip("10.1.2.3")) && src.matches(ip("::1")));
        assert!(!src.matches(ip("192.0.2.1")));
        assert!(
            c.to_string()
                .starts_with("certificate ID \"alice\" (serial 7) of key SHA256:")
        );
    }

    #[test]
    fn a_corrupted_signature_or_blob_is_refused() {
        let (blob, _, _) = sign(&ca(), &Spec::default());
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            Cert::parse(&bad).unwrap_err(),
            "the CA signature does not verify"
        );
        // A byte of the signed part changed (the serial).
        let mut bad = blob.clone();
        bad[4 + 32 + 4 + 32 + 4 + 32 + 7] ^= 1;
        assert!(Cert::parse(&bad).is_err());
        for n in [0, 10, blob.len() / 2, blob.len() - 1] {
            assert!(Cert::parse(&blob[..n]).is_err(), "truncated at {n}");
        }
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(
            Cert::parse(&long).unwrap_err(),
            "certificate has trailing bytes"
        );
        assert!(Cert::parse(b"").is_err());
        let mut huge = blob.clone();
        huge[0] = 0xff; // a length past the end
        assert!(Cert::parse(&huge).is_err());
    }

    #[test]
    fn critical_options_are_checked() {
        let parse = |critical| {
            Cert::parse(
                &sign(
                    &ca(),
                    &Spec {
                        critical,
                        ..Spec::default()
                    },
                )
                .0,
            )
        };
        let e = parse(vec![("foo@example.com", "bar")]).unwrap_err();
        assert!(
            e.contains("unknown critical option \"foo@example.com\""),
            "{e}"
        );
        assert!(parse(vec![("verify-required", "")]).is_err());
        assert!(parse(vec![("force-command", "/bin/sh -c x")]).is_err());
        assert!(parse(vec![("source-address", "10.0.0.*")]).is_err());
        assert!(parse(vec![("source-address", "!10.0.0.1")]).is_err());
        assert!(parse(vec![("source-address", "10.0.0.1/8")]).is_err());
        let e = parse(vec![("source-address", "::1"), ("force-command", "a")]).unwrap_err();
        assert!(e.contains("out of order"), "{e}");
        assert!(parse(vec![("force-command", "a"), ("force-command", "b")]).is_err());
    }

    #[test]
    fn non_ed25519_cas_are_refused_by_name() {
        let (blob, _, _) = sign(&ca(), &Spec::default());
        // Swap the CA key's type name for ssh-rsa (same length is not
        // needed: rebuild the tail).
        let c = Cert::parse(&blob).unwrap();
        let tail_at = blob.len() - (4 + c.ca.len()) - (4 + 4 + 11 + 4 + 64);
        let mut b = blob[..tail_at].to_vec();
        let mut rsa = Vec::new();
        put_string(&mut rsa, b"ssh-rsa");
        put_string(&mut rsa, &[1, 0, 1]);
        put_string(&mut rsa, &[0u8; 256]);
        put_string(&mut b, &rsa);
        put_string(&mut b, &[0u8; 20]);
        let e = Cert::parse(&b).unwrap_err();
        assert_eq!(
            e,
            "signed by a \"ssh-rsa\" CA: only ssh-ed25519 CA keys are supported"
        );
    }

    #[test]
    fn admission_checks_type_time_principals_source_and_ca() {
        let f = CaFile::new("admit", "{ca}\n");
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let cert = |spec: Spec| Cert::parse(&sign(&ca(), &spec).0).unwrap();
        let lo = ip("127.0.0.1");
        let ok = cert(Spec::default());
        let g = f.cas.admit(&ok, "mcp", lo, now).unwrap();
        assert!(g.is_unrestricted());
        let e = f.cas.admit(&ok, "bob", lo, now).unwrap_err();
        assert!(e.contains("do not include the user name \"bob\""), "{e}");
        let host = cert(Spec {
            cert_type: HOST_CERT,
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(&host, "mcp", lo, now)
                .unwrap_err()
                .contains("host certificate")
        );
        let old = cert(Spec {
            valid: (0, secs - 10),
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(&old, "mcp", lo, now)
                .unwrap_err()
                .contains("expired")
        );
        let early = cert(Spec {
            valid: (secs + 100, u64::MAX),
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(&early, "mcp", lo, now)
                .unwrap_err()
                .contains("not valid yet")
        );
        // The last second of the window is in; valid_before itself is out.
        let edge = cert(Spec {
            valid: (secs, secs + 1),
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(
                    &edge,
                    "mcp",
                    lo,
                    UNIX_EPOCH + std::time::Duration::from_secs(secs)
                )
                .is_ok()
        );
        assert!(
            f.cas
                .admit(
                    &edge,
                    "mcp",
                    lo,
                    UNIX_EPOCH + std::time::Duration::from_secs(secs + 1)
                )
                .is_err()
        );
        let none = cert(Spec {
            principals: vec![],
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(&none, "mcp", lo, now)
                .unwrap_err()
                .contains("no principals")
        );
        let src = cert(Spec {
            critical: vec![("source-address", "127.0.0.2")],
            ..Spec::default()
        });
        assert!(
            f.cas
                .admit(&src, "mcp", lo, now)
                .unwrap_err()
                .contains("source-address")
        );
        assert!(f.cas.admit(&src, "mcp", ip("127.0.0.2"), now).is_ok());
        let forced = cert(Spec {
            critical: vec![("force-command", "time")],
            ..Spec::default()
        });
        let g = f.cas.admit(&forced, "mcp", lo, now).unwrap();
        assert!(g.allows_server("time") && !g.allows_server("fs"));
        // Another CA.
        let other =
            Cert::parse(&sign(&SigningKey::from_bytes(&[4u8; 32]), &Spec::default()).0).unwrap();
        let e = f.cas.admit(&other, "mcp", lo, now).unwrap_err();
        assert!(e.starts_with("its CA is not listed in"), "{e}");
    }

    #[test]
    fn ca_line_options_apply_to_every_certificate() {
        let f = CaFile::new(
            "options",
            "principals=\"ops,dev\",command=\"time,fs\",environment=\"MCP_TOOLS=get_*\" {ca}\n",
        );
        let now = SystemTime::now();
        let lo = ip("127.0.0.1");
        let cert = |principals| {
            Cert::parse(
                &sign(
                    &ca(),
                    &Spec {
                        principals,
                        critical: vec![("force-command", "fs,other")],
                        ..Spec::default()
                    },
                )
                .0,
            )
            .unwrap()
        };
        // principals= replaces the user-name rule.
        let g = f.cas.admit(&cert(vec!["dev"]), "anyone", lo, now).unwrap();
        assert!(g.allows_tool("get_x") && !g.allows_tool("set_x"));
        // command= and force-command both limit: only fs is in both.
        assert!(g.allows_server("fs"));
        assert!(!g.allows_server("time") && !g.allows_server("other"));
        let e = f.cas.admit(&cert(vec!["mcp"]), "mcp", lo, now).unwrap_err();
        assert!(e.contains("principals= at"), "{e}");
        let any = CaFile::new("any", "principals=\"*\" {ca}\nfrom=\"10.0.0.0/8\" {ca}\n");
        let e = any.cas.admit(&cert(vec!["x"]), "x", lo, now).unwrap_err();
        assert!(e.contains("from="), "{e}");
        let any = CaFile::new("any2", "cert-authority,principals=\"*\" {ca}\n");
        assert!(any.cas.admit(&cert(vec!["x"]), "mcp", lo, now).is_ok());
        // A refused line leaves the CA out.
        let bad = CaFile::new("bad", "principals=\"a*\" {ca}\n");
        assert!(bad.cas.admit(&cert(vec!["a"]), "a", lo, now).is_err());
        assert_eq!(bad.cas.count(), 0);
    }
}
