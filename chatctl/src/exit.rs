//! Exit codes (sysexits-style where one exists) and the error every command returns.

/// What `chatctl` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command failed: the server refused it (400 invalid, 409 conflict, 421 wrong node,
    /// 501) or answered with an unexpected error (500).
    Failed = 1,
    /// Bad command line: unknown command or flag, missing `--yes` on a destructive verb.
    Usage = 2,
    /// The user, group, connection or node does not exist (404).
    NotFound = 3,
    /// The server cannot be reached, timed out, or answered 502/503/504 (EX_UNAVAILABLE).
    Unavailable = 69,
    /// No admin token, a wrong one, or the admin API is disabled (401/403; EX_NOPERM).
    Denied = 77,
    /// A configuration file that does not load (`config check`; EX_CONFIG).
    Config = 78,
}

/// The exit-code table shown at the end of `chatctl --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0   ok
  1   failed: the server refused the request (400, 409, 421, 5xx other than below)
  2   usage: bad command line, or a destructive verb without --yes
  3   not found: no such user, group, connection or node (404)
  69  unavailable: server unreachable, timed out, or 502/503/504
  77  denied: missing or wrong admin token, or admin API disabled (401/403)
  78  bad config: `config check` found problems

Environment: CHATCTL_ENDPOINT, CHATCTL_TOKEN, CHATCTL_OUTPUT, CHATCTL_TIMEOUT.";

/// A failed command: exit code, stable code (the server's error code when it sent one), and
/// a human-readable message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Exit code.
    pub exit: Exit,
    /// Stable machine-readable code, e.g. `not_found`, `unreachable`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with explicit parts.
    pub fn new(exit: Exit, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { exit, code: code.into(), message: message.into() }
    }

    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, "usage", message)
    }
}

/// The exit code of an HTTP error status.
pub fn exit_for_status(status: u16) -> Exit {
    match status {
        401 | 403 => Exit::Denied,
        404 => Exit::NotFound,
        502..=504 => Exit::Unavailable,
        _ => Exit::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(exit_for_status(401), Exit::Denied);
        assert_eq!(exit_for_status(403), Exit::Denied);
        assert_eq!(exit_for_status(404), Exit::NotFound);
        assert_eq!(exit_for_status(503), Exit::Unavailable);
        assert_eq!(exit_for_status(400), Exit::Failed);
        assert_eq!(exit_for_status(409), Exit::Failed);
        assert_eq!(exit_for_status(500), Exit::Failed);
    }
}
