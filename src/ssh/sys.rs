//! The only `unsafe` in the crate: a small safe API over the libssh server
//! calls that `libssh_rs::sys` exposes.
//!
//! Ownership rules that every wrapper below relies on:
//! - A [`Session`] and everything derived from it ([`Message`], [`Channel`])
//!   is used by one thread at a time; `Session` is `Send` so the accept thread
//!   can hand it to the connection thread, nothing here is `Sync`.
//! - Borrow lifetimes tie messages and channels to their session, so none of
//!   them outlives the `ssh_session` that owns the underlying memory. Once
//!   authenticated, session and channel move together into a [`Live`], which
//!   owns both and stays on the connection's thread.
//! - Strings passed to libssh are `CString`s that live across the call.

use crate::error::Error;
use libssh_rs::sys;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Once;
use std::time::Duration;

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Config(format!("{s:?} contains a NUL byte")))
}

/// Reads libssh's last error for a session or bind object.
///
/// Safety: `obj` must be a live `ssh_session` or `ssh_bind`.
unsafe fn last_error(obj: *mut c_void) -> String {
    // SAFETY: caller guarantees a live object; libssh returns a pointer to a
    // NUL-terminated buffer inside it (never NULL), valid until the next call.
    unsafe {
        let p = sys::ssh_get_error(obj);
        if p.is_null() {
            return "unknown libssh error".into();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Calls `ssh_init` once per process. libssh needs it before any other call
/// when it is used from several threads.
pub fn init() {
    static ONCE: Once = Once::new();
    // SAFETY: ssh_init has no preconditions; Once makes it run a single time.
    ONCE.call_once(|| unsafe {
        sys::ssh_init();
    });
}

unsafe extern "C" fn on_libssh_log(
    priority: c_int,
    _function: *const c_char,
    buffer: *const c_char,
    _userdata: *mut c_void,
) {
    // SAFETY: libssh passes a NUL-terminated message (or NULL).
    let msg = unsafe { opt_str(buffer) };
    // libssh reports ordinary events (a client's disconnect) as warnings:
    // keep them at DEBUG so the INFO log stays one line per event of ours.
    log::debug!("libssh[{priority}]: {msg}");
}

/// Sends libssh's own log lines (for the calling thread: libssh keeps the
/// level and callback per thread) to `log`. `verbosity` is libssh's scale:
/// 0 none, 1 warnings, 2 protocol, 3 packets, 4 functions.
pub fn forward_logs(verbosity: i32) {
    // SAFETY: the callback is a plain function valid for the whole program.
    unsafe {
        sys::ssh_set_log_callback(Some(on_libssh_log));
        sys::ssh_set_log_level(verbosity);
    }
}

/// A private key loaded by libssh (the host key).
pub struct Key(sys::ssh_key);

// SAFETY: an ssh_key is plain heap data with no thread affinity; after loading
// it is only read (libssh duplicates it into each session on accept).
unsafe impl Send for Key {}
unsafe impl Sync for Key {}

impl Key {
    /// Loads an OpenSSH or PEM private key, decrypting it with `passphrase`.
    pub fn import_private(path: &str, passphrase: Option<&str>) -> Result<Key, Error> {
        let cpath = cstring(path)?;
        let cpass = passphrase.map(cstring).transpose()?;
        let mut key: sys::ssh_key = ptr::null_mut();
        // SAFETY: the CStrings outlive the call; `key` is an out-pointer that
        // libssh fills on success (we own it then and free it in Drop).
        let rc = unsafe {
            sys::ssh_pki_import_privkey_file(
                cpath.as_ptr(),
                cpass.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                None,
                ptr::null_mut(),
                &mut key,
            )
        };
        if rc != 0 || key.is_null() {
            return Err(Error::Key(format!(
                "cannot load the private key {path} (wrong passphrase, or not an OpenSSH/PEM key)"
            )));
        }
        Ok(Key(key))
    }

    /// The public half as an OpenSSH line: `ssh-ed25519 AAAA...`.
    pub fn public_line(&self) -> Result<String, Error> {
        let mut b64: *mut c_char = ptr::null_mut();
        // SAFETY: self.0 is a live key; the returned string is malloc'ed by
        // libssh and freed below with ssh_string_free_char after copying.
        unsafe {
            if sys::ssh_pki_export_pubkey_base64(self.0, &mut b64) != 0 || b64.is_null() {
                return Err(Error::ssh("cannot export the host public key", ""));
            }
            let body = CStr::from_ptr(b64).to_string_lossy().into_owned();
            sys::ssh_string_free_char(b64);
            let tname = CStr::from_ptr(sys::ssh_key_type_to_char(sys::ssh_key_type(self.0)))
                .to_string_lossy()
                .into_owned();
            Ok(format!("{tname} {body}"))
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: we own the key and nothing else refers to it.
        unsafe { sys::ssh_key_free(self.0) }
    }
}

/// Algorithm lists and listen address for [`Bind::listen`].
pub struct BindConfig<'a> {
    pub addr: &'a str,
    pub port: u16,
    /// Moved into the bind: libssh takes ownership of an imported key.
    pub host_key: Key,
}

/// Modern algorithms only (DESIGN.md section 6): ssh-audit finds no failure.
const KEX: &str = "curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512";
const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes128-ctr";
const MACS: &str = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com";
const HOSTKEY_ALGS: &str = "ssh-ed25519";

/// A listening libssh server.
///
/// The listening socket is ours, not libssh's: std creates it and accepts
/// with close-on-exec set atomically (libssh's own `accept` leaves it off),
/// so no child process started by any session inherits the listener or
/// another client's connection. An inherited copy would keep a connection
/// open after the server closed it, and hand a child other users' sockets.
pub struct Bind(sys::ssh_bind, std::net::TcpListener);

// SAFETY: the bind object is only used by the accept loop thread after creation.
unsafe impl Send for Bind {}

impl Bind {
    pub fn listen(cfg: BindConfig) -> Result<Bind, Error> {
        init();
        let listener = std::net::TcpListener::bind((cfg.addr, cfg.port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::io(format!("cannot listen on {}:{}", cfg.addr, cfg.port), e))?;
        // SAFETY: ssh_bind_new returns an owned object or NULL.
        let b = unsafe { sys::ssh_bind_new() };
        if b.is_null() {
            return Err(Error::ssh("ssh_bind_new failed", ""));
        }
        let bind = Bind(b, listener);
        use sys::ssh_bind_options_e::*;
        let no: c_int = 0;
        // SAFETY: PROCESS_CONFIG takes a pointer to a C bool-sized int; it stops
        // libssh from reading /etc/ssh/libssh_server_config behind our back.
        unsafe {
            sys::ssh_bind_options_set(
                bind.0,
                SSH_BIND_OPTIONS_PROCESS_CONFIG,
                &no as *const c_int as *const c_void,
            );
        }
        bind.set_str(SSH_BIND_OPTIONS_KEY_EXCHANGE, KEX)?;
        bind.set_str(SSH_BIND_OPTIONS_CIPHERS_C_S, CIPHERS)?;
        bind.set_str(SSH_BIND_OPTIONS_CIPHERS_S_C, CIPHERS)?;
        bind.set_str(SSH_BIND_OPTIONS_HMAC_C_S, MACS)?;
        bind.set_str(SSH_BIND_OPTIONS_HMAC_S_C, MACS)?;
        bind.set_str(SSH_BIND_OPTIONS_HOSTKEY_ALGORITHMS, HOSTKEY_ALGS)?;
        // SAFETY: on success IMPORT_KEY stores the ssh_key pointer itself in
        // the bind, which frees it in ssh_bind_free: ownership moves, so the
        // Key must not be freed again (forget). On failure it stays ours.
        let rc = unsafe {
            sys::ssh_bind_options_set(
                bind.0,
                SSH_BIND_OPTIONS_IMPORT_KEY,
                cfg.host_key.0 as *const c_void,
            )
        };
        if rc != 0 {
            // SAFETY: bind.0 is live.
            return Err(Error::ssh("cannot load the host key", unsafe {
                last_error(bind.0 as *mut c_void)
            }));
        }
        std::mem::forget(cfg.host_key);
        // SAFETY: bind.0 is live and configured. Given a socket, ssh_bind_listen
        // only loads the keys; Drop takes the fd back before ssh_bind_free,
        // which would otherwise close it under the TcpListener.
        if unsafe {
            use std::os::fd::AsRawFd;
            sys::ssh_bind_set_fd(bind.0, bind.1.as_raw_fd());
            sys::ssh_bind_listen(bind.0)
        } != 0
        {
            let e = unsafe { last_error(bind.0 as *mut c_void) };
            return Err(Error::ssh("cannot load the host key", e));
        }
        Ok(bind)
    }

    fn set_str(&self, opt: sys::ssh_bind_options_e, v: &str) -> Result<(), Error> {
        let c = cstring(v)?;
        // SAFETY: string options take a NUL-terminated string that libssh copies.
        let rc = unsafe { sys::ssh_bind_options_set(self.0, opt, c.as_ptr() as *const c_void) };
        if rc != 0 {
            // SAFETY: self.0 is live.
            let e = unsafe { last_error(self.0 as *mut c_void) };
            return Err(Error::ssh(format!("bind option {opt:?}={v}"), e));
        }
        Ok(())
    }

    /// The listening socket, to poll it together with a shutdown fd.
    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.1.as_raw_fd()
    }

    /// Accepts one connection if one is waiting (poll `fd` first), with the
    /// peer's address: `None` when none was (the listener does not block).
    /// When `keep_stream` says so for the peer, also a second handle on the
    /// socket (a dup), for reading a PROXY header before libssh reads: in
    /// libssh 0.10, `ssh_bind_accept_fd` only stores the fd (no I/O).
    pub fn accept(
        &self,
        keep_stream: impl Fn(std::net::IpAddr) -> bool,
    ) -> Result<Option<Accepted>, Error> {
        let (fd, peer, stream) = match self.1.accept() {
            Ok((stream, peer)) => {
                let dup = keep_stream(peer.ip())
                    .then(|| stream.try_clone())
                    .transpose()
                    .map_err(|e| Error::io("duplicating an accepted socket", e))?;
                (std::os::fd::OwnedFd::from(stream), peer, dup)
            }
            // None waiting, or the one waiting gave up (reset) meanwhile.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("accepting a connection", e)),
        };
        // SAFETY: ssh_new returns an owned session or NULL.
        let s = unsafe { sys::ssh_new() };
        if s.is_null() {
            return Err(Error::ssh("ssh_new failed", ""));
        }
        // SAFETY: an all-zero callbacks struct means "no callback set".
        let mut srv: Box<sys::ssh_server_callbacks_struct> =
            Box::new(unsafe { std::mem::zeroed() });
        srv.size = std::mem::size_of::<sys::ssh_server_callbacks_struct>();
        let session = Session(s, srv);
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: both objects are live and raw is an open socket. Once libssh
        // stores the fd in the session, the session owns it (ssh_free, in
        // Drop, closes it); a failure before that leaves it ours to close.
        if unsafe { sys::ssh_bind_accept_fd(self.0, session.0, raw) } != 0 {
            let e = unsafe { last_error(self.0 as *mut c_void) };
            if unsafe { sys::ssh_get_fd(session.0) } != raw {
                drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
            }
            return Err(Error::ssh("accepting a connection", e));
        }
        Ok(Some(Accepted {
            session,
            peer,
            stream,
        }))
    }
}

/// A connection [`Bind::accept`] took.
pub struct Accepted {
    pub session: Session,
    pub peer: std::net::SocketAddr,
    /// A second handle on its socket, if asked for.
    pub stream: Option<std::net::TcpStream>,
}

impl Drop for Bind {
    fn drop(&mut self) {
        // SAFETY: we own the bind object; sessions accepted from it are
        // independent. The socket belongs to the TcpListener (dropped after
        // this): take it back so ssh_bind_free does not close it too.
        unsafe {
            sys::ssh_bind_set_fd(self.0, -1);
            sys::ssh_bind_free(self.0)
        }
    }
}

/// What an incoming libssh message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A public-key auth attempt: `signed` is false for the probe, true when
    /// libssh verified the signature.
    AuthPublicKey {
        signed: bool,
    },
    /// Any other auth method (none, password, keyboard-interactive, ...).
    AuthOther,
    OpenSession,
    OpenOther,
    Shell,
    Exec(String),
    Subsystem(String),
    Pty,
    Env,
    ChannelOther,
    Other,
}

/// One SSH connection.
pub struct Session(sys::ssh_session, Box<sys::ssh_server_callbacks_struct>);

// SAFETY: a session is created on the accept thread and then used by exactly
// one connection thread; libssh keeps no thread-local state per session.
unsafe impl Send for Session {}

/// Seconds and microseconds for libssh's timeout options: whole
/// milliseconds, rounded up, never 0 (which libssh reads as its default).
fn timeout_parts(t: Duration) -> (u64, u64) {
    let ms = t.as_micros().div_ceil(1000).clamp(1, i32::MAX as u128) as u64;
    (ms / 1000, (ms % 1000) * 1000)
}

impl Session {
    fn set_opt(&self, opt: sys::ssh_options_e, v: *const c_void) {
        // SAFETY: self.0 is live; v points to the type the option documents.
        unsafe {
            sys::ssh_options_set(self.0, opt, v);
        }
    }

    /// Options that must be set before key exchange: timeout for blocking
    /// calls, TCP_NODELAY (90 ms -> 3 ms connect), no compression.
    pub fn prepare(&self, timeout: Duration) {
        use sys::ssh_options_e::*;
        self.set_timeout(timeout);
        let one: c_int = 1;
        self.set_opt(SSH_OPTIONS_NODELAY, &one as *const c_int as *const c_void);
        let none = c"none";
        self.set_opt(SSH_OPTIONS_COMPRESSION_C_S, none.as_ptr() as *const c_void);
        self.set_opt(SSH_OPTIONS_COMPRESSION_S_C, none.as_ptr() as *const c_void);
        // libssh applies NODELAY when it connects, not to accepted sockets:
        // set it (and keepalive, for peers that vanish without a reset) here.
        let fd = self.fd();
        if fd >= 0 {
            for (level, opt) in [
                (libc::IPPROTO_TCP, libc::TCP_NODELAY),
                (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            ] {
                // SAFETY: fd is this session's open socket; the option value
                // is a c_int that lives across the call.
                unsafe {
                    libc::setsockopt(
                        fd,
                        level,
                        opt,
                        &one as *const c_int as *const c_void,
                        std::mem::size_of::<c_int>() as libc::socklen_t,
                    );
                }
            }
        }
    }

    /// Bounds each blocking libssh call (the whole key exchange, or the wait
    /// for one message) to `t`, rounded up to whole milliseconds: libssh
    /// counts in milliseconds and reads 0 as its own default (10 s), so a
    /// sub-millisecond rest must not become 0.
    pub fn set_timeout(&self, t: Duration) {
        let (secs, usecs) = timeout_parts(t);
        self.set_timeout_raw(secs, usecs);
    }

    /// Back to libssh's default once the session is set up: the session
    /// loop polls with its own timeouts.
    pub fn clear_timeout(&self) {
        self.set_timeout_raw(0, 0);
    }

    fn set_timeout_raw(&self, secs: u64, usecs: u64) {
        let (secs, usecs) = (secs as libc::c_long, usecs as libc::c_long);
        self.set_opt(
            sys::ssh_options_e::SSH_OPTIONS_TIMEOUT,
            &secs as *const libc::c_long as *const c_void,
        );
        self.set_opt(
            sys::ssh_options_e::SSH_OPTIONS_TIMEOUT_USEC,
            &usecs as *const libc::c_long as *const c_void,
        );
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: self.0 is live.
        unsafe { sys::ssh_get_fd(self.0) }
    }

    pub fn handle_key_exchange(&self) -> Result<(), Error> {
        // SAFETY: self.0 is a live accepted session.
        if unsafe { sys::ssh_handle_key_exchange(self.0) } != 0 {
            return Err(Error::ssh("key exchange", unsafe {
                last_error(self.0 as *mut c_void)
            }));
        }
        // SAFETY: only public-key auth is offered from here on. An empty
        // server-callbacks struct makes libssh answer unexpected requests with
        // default replies instead of queueing them.
        unsafe {
            sys::ssh_set_auth_methods(self.0, sys::SSH_AUTH_METHOD_PUBLICKEY as c_int);
        }
        Ok(())
    }

    /// The client's first line, as libssh received it (CR and LF removed),
    /// once key exchange got that far: its SSH banner, or what it sent
    /// instead.
    pub fn client_banner(&self) -> Option<String> {
        // SAFETY: self.0 is live; libssh returns its own NUL-terminated copy
        // of the line, or NULL, valid while the session is: copied at once.
        unsafe {
            let p = sys::ssh_get_clientbanner(self.0);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }

    /// After the channel is set up: later requests get libssh's default
    /// (failure) reply instead of piling up in a queue nobody reads. Must not
    /// be called earlier, or `next_message` never sees auth requests.
    pub fn stop_queueing(&self) {
        // SAFETY: the all-NULL struct is boxed inside the Session, so it lives
        // as long as libssh may read it.
        unsafe {
            sys::ssh_set_server_callbacks(self.0, &*self.1 as *const _ as *mut _);
        }
    }

    /// Blocks for the next message (auth, channel open, channel request).
    /// `None` when the connection ended or timed out.
    pub fn next_message(&self) -> Option<Message<'_>> {
        // SAFETY: self.0 is live; the message is owned by us until freed.
        let m = unsafe { sys::ssh_message_get(self.0) };
        if m.is_null() {
            None
        } else {
            Some(Message {
                msg: m,
                _s: PhantomData,
            })
        }
    }

    pub fn error(&self) -> String {
        // SAFETY: self.0 is live.
        unsafe { last_error(self.0 as *mut c_void) }
    }

    pub fn disconnect(&self) {
        // SAFETY: self.0 is live; disconnecting twice is harmless in libssh.
        unsafe { sys::ssh_disconnect(self.0) }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: channels and messages borrow the session, so they are gone;
        // ssh_free closes the socket.
        unsafe { sys::ssh_free(self.0) }
    }
}

/// An incoming request; freed when dropped.
pub struct Message<'s> {
    msg: sys::ssh_message,
    _s: PhantomData<&'s Session>,
}

impl<'s> Message<'s> {
    pub fn request(&self) -> Request {
        use sys::ssh_channel_requests_e::*;
        use sys::ssh_requests_e::*;
        // SAFETY: self.msg is live; the getters return borrowed data that we
        // copy before the message is freed.
        unsafe {
            let t = sys::ssh_message_type(self.msg);
            let st = sys::ssh_message_subtype(self.msg);
            if t == SSH_REQUEST_AUTH as c_int {
                if st == sys::SSH_AUTH_METHOD_PUBLICKEY as c_int {
                    let state = sys::ssh_message_auth_publickey_state(self.msg);
                    return Request::AuthPublicKey {
                        signed: state == sys::ssh_publickey_state_e::SSH_PUBLICKEY_STATE_VALID,
                    };
                }
                return Request::AuthOther;
            }
            if t == SSH_REQUEST_CHANNEL_OPEN as c_int {
                if st == sys::ssh_channel_type_e::SSH_CHANNEL_SESSION as c_int {
                    return Request::OpenSession;
                }
                return Request::OpenOther;
            }
            if t == SSH_REQUEST_CHANNEL as c_int {
                return match st {
                    x if x == SSH_CHANNEL_REQUEST_SHELL as c_int => Request::Shell,
                    x if x == SSH_CHANNEL_REQUEST_EXEC as c_int => {
                        Request::Exec(opt_str(sys::ssh_message_channel_request_command(self.msg)))
                    }
                    x if x == SSH_CHANNEL_REQUEST_SUBSYSTEM as c_int => Request::Subsystem(
                        opt_str(sys::ssh_message_channel_request_subsystem(self.msg)),
                    ),
                    x if x == SSH_CHANNEL_REQUEST_PTY as c_int => Request::Pty,
                    x if x == SSH_CHANNEL_REQUEST_ENV as c_int => Request::Env,
                    _ => Request::ChannelOther,
                };
            }
            Request::Other
        }
    }

    /// The offered public key as (type name, blob), for a public-key auth message.
    pub fn auth_key(&self) -> Option<(String, Vec<u8>)> {
        // SAFETY: the key belongs to the message (not freed by us); the base64
        // string is malloc'ed by libssh and freed after copying.
        unsafe {
            let key = sys::ssh_message_auth_pubkey(self.msg);
            if key.is_null() {
                return None;
            }
            let mut b64: *mut c_char = ptr::null_mut();
            if sys::ssh_pki_export_pubkey_base64(key, &mut b64) != 0 || b64.is_null() {
                return None;
            }
            let body = CStr::from_ptr(b64).to_string_lossy().into_owned();
            sys::ssh_string_free_char(b64);
            let tname = opt_str(sys::ssh_key_type_to_char(sys::ssh_key_type(key)));
            use base64::Engine;
            let blob = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .ok()?;
            Some((tname, blob))
        }
    }

    pub fn auth_user(&self) -> String {
        // SAFETY: borrowed string copied before the message is freed.
        unsafe { opt_str(sys::ssh_message_auth_user(self.msg)) }
    }

    /// Tells the client the offered key would be accepted (answer to the probe).
    pub fn reply_pk_ok(&self) {
        // SAFETY: self.msg is a live public-key auth message.
        unsafe {
            sys::ssh_message_auth_reply_pk_ok_simple(self.msg);
        }
    }

    pub fn reply_auth_success(&self) {
        // SAFETY: self.msg is a live auth message.
        unsafe {
            sys::ssh_message_auth_reply_success(self.msg, 0);
        }
    }

    /// Refuses an auth attempt and lists public-key as the only method.
    pub fn reply_auth_denied(&self) {
        // SAFETY: self.msg is a live auth message.
        unsafe {
            sys::ssh_message_auth_set_methods(self.msg, sys::SSH_AUTH_METHOD_PUBLICKEY as c_int);
            sys::ssh_message_reply_default(self.msg);
        }
    }

    /// Refuses whatever was asked (libssh's default failure reply).
    pub fn reply_default(&self) {
        // SAFETY: self.msg is live.
        unsafe {
            sys::ssh_message_reply_default(self.msg);
        }
    }

    pub fn reply_success(&self) {
        // SAFETY: self.msg is a live channel request.
        unsafe {
            sys::ssh_message_channel_request_reply_success(self.msg);
        }
    }

    /// Accepts a session channel open request.
    pub fn accept_channel(&self) -> Option<Channel<'s>> {
        // SAFETY: self.msg is a channel-open message; the channel belongs to
        // the session and is freed by us in Channel's Drop (or by ssh_free).
        let ch = unsafe { sys::ssh_message_channel_request_open_reply_accept(self.msg) };
        if ch.is_null() {
            None
        } else {
            Some(Channel {
                ch,
                _s: PhantomData,
            })
        }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the message.
        unsafe { sys::ssh_message_free(self.msg) }
    }
}

/// Copies a possibly-NULL C string.
///
/// Safety: `p` is NULL or a valid NUL-terminated string.
unsafe fn opt_str(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: per the function contract.
        unsafe { CStr::from_ptr(p).to_string_lossy().into_owned() }
    }
}

/// A session channel of an authenticated connection, until it becomes part of
/// a [`Live`] connection.
pub struct Channel<'s> {
    ch: sys::ssh_channel,
    _s: PhantomData<&'s Session>,
}

impl Channel<'_> {
    /// Gives up the borrow of the session so both can move into a [`Live`].
    pub fn into_raw(self) -> RawChannel {
        let raw = RawChannel(self.ch);
        std::mem::forget(self);
        raw
    }
}

impl Drop for Channel<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the channel; the session is still alive (borrow).
        unsafe { sys::ssh_channel_free(self.ch) }
    }
}

/// A channel taken out of its borrow by [`Channel::into_raw`]; only
/// [`Live::new`] consumes it. Leaks (harmlessly: `ssh_free` frees it) if not.
pub struct RawChannel(sys::ssh_channel);

/// What the channel callbacks collected since it was last emptied.
#[derive(Default)]
pub struct Inbound {
    pub data: Vec<u8>,
    pub eof: bool,
    pub closed: bool,
}

/// An authenticated connection and its one session channel: what the MCP loop
/// works on. It owns the session and stays on the connection's thread
/// (`Live` is `Send`, not `Sync`).
pub struct Live {
    session: Session,
    ch: sys::ssh_channel,
    event: sys::ssh_event,
    /// From `Box::into_raw`: libssh's callbacks write through this pointer
    /// during `poll` and during a `write` that has to wait for the socket, so
    /// no Rust reference to it may be held across those calls.
    inbound: *mut Inbound,
    callbacks: Box<sys::ssh_channel_callbacks_struct>,
}

// SAFETY: every pointer in Live belongs to this one connection and is only
// touched through &mut self or &self methods; Live is not Sync, so they run on
// one thread at a time (the connection's thread). libssh keeps no
// per-thread state for a session (only the log level, see forward_logs).
unsafe impl Send for Live {}

unsafe extern "C" fn on_data(
    _s: sys::ssh_session,
    _c: sys::ssh_channel,
    data: *mut c_void,
    len: u32,
    is_stderr: c_int,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: userdata is Live's inbound pointer, valid until Live's Drop
    // removes the callbacks; no reference to it is alive during libssh calls.
    // libssh passes `len` readable bytes at `data`.
    unsafe {
        let inb = &mut *(userdata as *mut Inbound);
        if is_stderr == 0 {
            inb.data
                .extend_from_slice(std::slice::from_raw_parts(data as *const u8, len as usize));
        }
    }
    len as c_int
}

unsafe extern "C" fn on_eof(_s: sys::ssh_session, _c: sys::ssh_channel, userdata: *mut c_void) {
    // SAFETY: as in on_data.
    unsafe { (*(userdata as *mut Inbound)).eof = true }
}

unsafe extern "C" fn on_close(_s: sys::ssh_session, _c: sys::ssh_channel, userdata: *mut c_void) {
    // SAFETY: as in on_data.
    unsafe { (*(userdata as *mut Inbound)).closed = true }
}

impl Live {
    /// Installs the channel callbacks and an event loop over the session's
    /// socket. `channel` must come from this session.
    pub fn new(session: Session, channel: RawChannel) -> Result<Live, Error> {
        // SAFETY: a zeroed callbacks struct is all-NULL function pointers,
        // which libssh reads as "not set". `size` is the size of our (0.11)
        // struct; 0.10.6 reads only the fields it knows.
        let mut callbacks: Box<sys::ssh_channel_callbacks_struct> =
            Box::new(unsafe { std::mem::zeroed() });
        let inbound = Box::into_raw(Box::<Inbound>::default());
        callbacks.size = std::mem::size_of::<sys::ssh_channel_callbacks_struct>();
        callbacks.userdata = inbound as *mut c_void;
        callbacks.channel_data_function = Some(on_data);
        callbacks.channel_eof_function = Some(on_eof);
        callbacks.channel_close_function = Some(on_close);
        let mut live = Live {
            session,
            ch: channel.0,
            event: ptr::null_mut(),
            inbound,
            callbacks,
        };
        // SAFETY: the channel belongs to the session (checked); the callbacks
        // box and inbound live as long as `live`, whose Drop unregisters them
        // before freeing anything.
        unsafe {
            if sys::ssh_channel_get_session(live.ch) != live.session.0 {
                return Err(Error::ssh("channel setup", "channel of another session"));
            }
            sys::ssh_set_channel_callbacks(live.ch, &mut *live.callbacks);
            live.event = sys::ssh_event_new();
            if live.event.is_null() {
                return Err(Error::ssh("ssh_event_new failed", ""));
            }
            if sys::ssh_event_add_session(live.event, live.session.0) != 0 {
                sys::ssh_event_free(live.event);
                live.event = ptr::null_mut();
                return Err(Error::ssh("ssh_event_add_session failed", ""));
            }
        }
        Ok(live)
    }

    /// The connection's socket, for an outside poll.
    pub fn fd(&self) -> RawFd {
        self.session.fd()
    }

    /// Processes what the socket has, waiting up to `timeout_ms` (0: do not
    /// wait) for it. Callbacks fill [`Live::inbound`].
    pub fn poll(&mut self, timeout_ms: i32) -> Result<(), Error> {
        // SAFETY: event and session are live; callbacks only touch inbound.
        let rc = unsafe { sys::ssh_event_dopoll(self.event, timeout_ms) };
        if rc == sys::SSH_ERROR {
            if !self.connected() {
                self.inbound().closed = true;
                return Ok(());
            }
            return Err(Error::ssh("connection", self.session.error()));
        }
        Ok(())
    }

    pub fn inbound(&mut self) -> &mut Inbound {
        // SAFETY: inbound is valid until Drop; &mut self excludes libssh calls
        // (and so callbacks) while the reference lives.
        unsafe { &mut *self.inbound }
    }

    pub fn connected(&self) -> bool {
        // SAFETY: session is live.
        unsafe { sys::ssh_is_connected(self.session.0) != 0 }
    }

    /// Sends what libssh still holds without waiting: replies it made on
    /// its own while handling a packet (a window adjustment, a
    /// global-request answer) are only queued when the socket was last seen
    /// busy. Returns true if some output is still waiting for socket room,
    /// so an outside poll must wait for the socket to be writable too.
    pub fn flush_pending(&mut self) -> bool {
        // SAFETY: session is live; with timeout 0 this polls once and does
        // not block. Callbacks that run meanwhile only touch inbound.
        unsafe { sys::ssh_blocking_flush(self.session.0, 0) == sys::SSH_AGAIN }
    }

    /// Bytes the peer's window allows us to send right now.
    pub fn window(&self) -> u32 {
        // SAFETY: self.ch is live.
        unsafe { sys::ssh_channel_window_size(self.ch) }
    }

    /// Writes `data` (callers keep it within [`Live::window`]; it may still
    /// wait for socket room). Returns bytes written.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        let len = data.len().min(u32::MAX as usize) as u32;
        // SAFETY: data is valid for len bytes during the call; callbacks that
        // run while libssh waits only touch inbound (no reference held).
        let n = unsafe { sys::ssh_channel_write(self.ch, data.as_ptr() as *const c_void, len) };
        if n < 0 {
            Err(Error::ssh("write to the client failed", ""))
        } else {
            Ok(n as usize)
        }
    }

    pub fn write_stderr(&mut self, data: &[u8]) {
        // SAFETY: data is valid for its length during the call.
        unsafe {
            sys::ssh_channel_write_stderr(
                self.ch,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        }
    }

    /// Moves what arrived before the callbacks existed into inbound (DESIGN.md:
    /// data sent right after the shell request is buffered inside libssh).
    pub fn take_early(&mut self) {
        let mut buf = [0u8; 16384];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                sys::ssh_channel_read_nonblocking(
                    self.ch,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len() as u32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            self.inbound().data.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: self.ch is live.
        if unsafe { sys::ssh_channel_is_eof(self.ch) } != 0 {
            self.inbound().eof = true;
        }
    }

    /// exit-status, EOF and close: what OpenSSH expects for a clean end.
    pub fn finish(&mut self, status: i32) {
        // SAFETY: self.ch is live; each call is harmless on a closed channel.
        unsafe {
            sys::ssh_channel_request_send_exit_status(self.ch, status);
            sys::ssh_channel_send_eof(self.ch);
            sys::ssh_channel_close(self.ch);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // SAFETY: unregister everything that points at our boxes before they
        // are freed; free the channel before ssh_disconnect (which frees the
        // session's channels itself); the session field is freed after this.
        unsafe {
            sys::ssh_remove_channel_callbacks(self.ch, &mut *self.callbacks);
            if !self.event.is_null() {
                sys::ssh_event_remove_session(self.event, self.session.0);
                sys::ssh_event_free(self.event);
            }
            sys::ssh_channel_free(self.ch);
            sys::ssh_disconnect(self.session.0);
            drop(Box::from_raw(self.inbound));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::timeout_parts;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds_and_never_zero() {
        assert_eq!(timeout_parts(Duration::from_nanos(1)), (0, 1000));
        assert_eq!(timeout_parts(Duration::from_micros(999)), (0, 1000));
        assert_eq!(timeout_parts(Duration::from_micros(1001)), (0, 2000));
        assert_eq!(timeout_parts(Duration::from_millis(2500)), (2, 500_000));
        assert_eq!(timeout_parts(Duration::from_secs(10)), (10, 0));
    }
}
