//! Authenticator tests.
