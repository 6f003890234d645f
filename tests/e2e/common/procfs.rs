//! What /proc shows of a process: its children, threads, fds, memory, CPU
//! and listening sockets; and signals and resource limits sent to it.

use super::eventually;
use std::time::Duration;

/// The fields of /proc/PID/stat after the command name: state, ppid, ...
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// PIDs whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether `pid` is still in the process table (a zombie counts: it has
/// not been reaped).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What a process's fds point at, as "3->socket:[123]".
pub fn fd_list(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let t = std::fs::read_link(e.path())
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    format!("{}->{t}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn fd_count(pid: u32) -> usize {
    fd_list(pid).len()
}

/// The lowest fd number the process has free: with RLIMIT_NOFILE at this
/// number, every new fd it asks for fails with EMFILE.
pub fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::HashSet<u64> = fd_list(pid)
        .iter()
        .filter_map(|l| l.split_once("->")?.0.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU used so far (utime + stime), in clock ticks (about 100 a second).
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(pid).unwrap();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Whether one of `pid`'s threads is blocked writing to a full pipe.
pub fn blocked_on_pipe_write(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
        })
        .unwrap_or(false)
}

/// Whether `pid` holds a TCP socket listening on `port` (its own socket,
/// not merely some socket on that port).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = fd_list(pid)
        .iter()
        .filter_map(|l| {
            Some(
                l.split_once("->socket:[")?
                    .1
                    .trim_end_matches(']')
                    .to_owned(),
            )
        })
        .collect();
    let port_hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // local_address, state (0A: LISTEN), inode
                f.len() > 9
                    && f[1].ends_with(&port_hex)
                    && f[3] == "0A"
                    && inodes.iter().any(|i| i == f[9])
            })
        })
    })
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// Sets `pid`'s soft RLIMIT_NOFILE and returns the old one (only the soft
/// limit moves, so a test can raise it back unprivileged).
pub fn set_nofile_soft_limit(pid: u32, soft: u64) -> u64 {
    let pid = pid as libc::pid_t;
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit reads the current one into a valid struct.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut cur) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: a valid rlimit struct; the old one is not wanted.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    cur.rlim_cur
}

/// (threads, fds) of a process once both hold still for 200 ms: a
/// session's last fds close just after its thread ends, and a new warm
/// spare's threads start just after its process.
pub fn settled_counts(pid: u32) -> (usize, usize) {
    let read = || (thread_count(pid), fd_count(pid));
    let mut last = read();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Asserts that `pid` gets back to `children` children, `threads` threads
/// and `fds` open fds.
pub fn assert_back_to(pid: u32, children: usize, threads: usize, fds: usize) {
    assert!(
        eventually(|| children_of(pid).len() == children),
        "children left: {:?}",
        children_of(pid)
    );
    assert!(
        eventually(|| thread_count(pid) == threads),
        "threads {} != {threads}",
        thread_count(pid)
    );
    assert!(
        eventually(|| fd_count(pid) == fds),
        "fds {} != {fds}: {:?}",
        fd_count(pid),
        fd_list(pid)
    );
}
