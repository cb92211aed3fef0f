//! Every connection is a file descriptor. A server started under a common soft limit of 1,024
//! would fall over at about a thousand idle clients, so start-up raises the soft limit to the
//! hard one, and the connection bound is fitted under what is left.

/// Descriptors kept back for everything that is not a connection: the log and history
/// databases with their journals, snapshot and backup files, the runtime's own.
pub const RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_soft_limit() -> std::io::Result<u64> {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Ok(limit.rlim_cur as u64);
            }
            return Ok(limit.rlim_max as u64);
        }
        Ok(limit.rlim_cur as u64)
    }
}

#[cfg(not(unix))]
pub fn raise_soft_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// The connection bound that fits `soft_limit`, or `None` if not even a handful fit.
pub fn fit_connections(configured: usize, soft_limit: u64) -> Option<usize> {
    let room = soft_limit.saturating_sub(RESERVED);
    if room < 64 {
        return None;
    }
    Some(configured.min(usize::try_from(room).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_fitted_under_the_descriptor_limit() {
        assert_eq!(fit_connections(16_384, 1_024), Some(768));
        assert_eq!(fit_connections(16_384, 1_048_576), Some(16_384));
        assert_eq!(fit_connections(16_384, 300), None);
    }

    #[cfg(unix)]
    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let soft = raise_soft_limit().unwrap();
        // SAFETY: as above.
        let hard = unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_max as u64
        };
        assert_eq!(soft, hard);
    }
}
