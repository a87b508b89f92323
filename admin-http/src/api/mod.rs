//! The JSON API, one module per resource: the caller's own account and tokens, and the
//! admin endpoints for users and groups, grants, service accounts, tables and syncs, and the
//! audit log. Every change goes through the state store, which validates and audits it.
//!
//! The shapes sent and received here are this crate's own (with their OpenAPI schemas);
//! each converts from or into the catalog's types, so the state can change without the API
//! changing under its clients.

pub mod account;
pub mod audit;
pub mod governance;
pub mod grants;
pub mod preview;
pub mod service_accounts;
pub mod tables;
pub mod users;
