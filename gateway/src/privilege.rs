//! What an error from the kernel says about the privileges vxgate runs with: the hint added
//! to "cannot open TAP" and "cannot bind" errors, so that a service started without
//! CAP_NET_ADMIN or CAP_NET_BIND_SERVICE fails with one line naming what it lacks.

use std::io;

/// The hint for an error opening a TAP (`/dev/net/tun`, then TUNSETIFF).
pub fn tap(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (attaching a TAP needs CAP_NET_ADMIN: run as root or give vxgate that capability)"
        }
        Some(libc::EACCES) => {
            " (/dev/net/tun must be readable and writable by vxgate's user: mode 0666, as udev makes it)"
        }
        _ => "",
    }
}

/// The hint for an error binding `port`.
pub fn bind(port: u16, e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) if port < 1024 => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE: run as root or give vxgate that capability)"
        }
        _ => "",
    }
}

/// Makes `dir` and its missing parents with mode 0700 (what vxgate writes is its own only).
pub fn private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_missing_capability() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert!(tap(&eperm).contains("CAP_NET_ADMIN"));
        assert!(tap(&eacces).contains("/dev/net/tun"));
        assert!(bind(443, &eacces).contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(bind(8443, &eacces), "");
        assert_eq!(tap(&io::Error::from_raw_os_error(libc::ENOENT)), "");
    }

    #[test]
    fn private_dirs_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tmp");
        let d = t.path().join("a/b");
        private_dir(&d).expect("made");
        for p in [t.path().join("a"), d] {
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }
}
