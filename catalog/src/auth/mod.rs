//! How a caller is signed in: passwords, tokens and identity providers all end in
//! [`Authenticator`](authenticator::Authenticator), which yields a [`Principal`](principal::Principal).
//!
//! - [`principal`]: principals, argon2id password hashes, signed bearer tokens.
//! - [`authenticator`]: sign-in, written once for every edge (Flight SQL, HTTP, OAuth).
//! - `throttle`: failed sign-ins slowed down per account and per address.

pub mod authenticator;
pub mod principal;
pub(crate) mod throttle;
