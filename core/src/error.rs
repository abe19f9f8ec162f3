//! The one place error codes come from.
//!
//! Every error enum at a crate boundary implements [`ErrorCode`]; the code feeds the HTTP body
//! `{"error":{"code","message"}}`, the WebSocket error frame and the `code` metric label.

/// An error with a stable, machine-readable code.
pub trait ErrorCode: std::error::Error {
    /// A stable snake_case code such as `token_expired`.
    fn code(&self) -> &'static str;
    /// The HTTP status this error maps to.
    fn http_status(&self) -> u16;
    /// Whether retrying the same request later can succeed.
    fn is_retryable(&self) -> bool {
        false
    }
}
