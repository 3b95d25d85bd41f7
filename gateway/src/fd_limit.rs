//! The open-files limit: raised to its hard limit at start (a gateway holds two sockets a
//! proxied request, and the usual soft limit of 1024 runs out under a few hundred), and read
//! to size the backend connection budget.

/// The soft `RLIMIT_NOFILE` now (1024 when it cannot be read).
pub fn current() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return 1024;
    }
    l.rlim_cur
}

/// Raises the soft limit to the hard one; returns `(before, after)` (equal when it could
/// not be raised).
pub fn raise() -> (u64, u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `current`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return (1024, 1024);
    }
    let before = l.rlim_cur;
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return (before, l.rlim_max);
        }
    }
    (before, before)
}
