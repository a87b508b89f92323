//! Flight SQL sessions (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`): options a
//! client sets once for the statements that follow — the JDBC driver's `catalog` and
//! `schema` connection properties, ADBC's current catalog and schema.
//!
//! A session is found by the `arrow_flight_session_id` cookie the server sets on each
//! session call, or, for clients that keep no cookies (the ADBC driver by default), by the
//! bearer credential its calls carry. It belongs to the user who opened it: another user's
//! cookie finds nothing. Sessions unused for [`IDLE`] are forgotten, and at most
//! [`CAPACITY`] are kept (the least recently used goes first).
//!
//! The messages are Flight's own (`Flight.proto`, Arrow 16), which this arrow-flight does not
//! generate yet: they are declared here with the same field numbers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::Request;

/// The cookie naming a session (Flight spec).
pub(crate) const COOKIE: &str = "arrow_flight_session_id";
/// Action types (Flight spec).
pub(crate) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
pub(crate) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
pub(crate) const CLOSE_SESSION: &str = "CloseSession";

/// A session unused this long is forgotten.
pub(crate) const IDLE: Duration = Duration::from_secs(24 * 3600);
/// Sessions kept at most.
pub(crate) const CAPACITY: usize = 100_000;
/// Sessions one user keeps at most (a pool of that many connections): a user opening more
/// forgets their own oldest, never another user's.
pub(crate) const PER_USER: usize = 500;

/// What a session remembers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Where unqualified table names are looked up.
    pub schema: Option<String>,
    /// Its temporary tables (removed from disk when the session is forgotten).
    pub temp: Option<Arc<quiver_catalog::engine::TempTables>>,
}

struct Session {
    user: String,
    options: Options,
    used: Instant,
}

/// The open sessions, by id, and the id each bearer credential's calls use.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    by_id: HashMap<String, Session>,
    by_bearer: HashMap<[u8; 32], String>,
    /// Each user's session ids, oldest first.
    by_user: HashMap<String, VecDeque<String>>,
    /// When idle sessions were last forgotten.
    swept: Option<Instant>,
}

/// How a call names its session.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    cookie: Option<String>,
    bearer: Option<[u8; 32]>,
}

impl Caller {
    /// The session cookie and the credential of `request`. The credential is taken as
    /// the server reads it — Basic user and password, or the bearer token — so spellings of
    /// one credential (padding, spaces, the scheme's case) name one session.
    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        let cookie = request
            .metadata()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.trim().to_string());
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(canonical_credential)
            .map(|c| Sha256::digest(c.as_bytes()).into());
        Self { cookie, bearer }
    }
}

/// One spelling of an `authorization` header's credential.
fn canonical_credential(header: &str) -> Option<String> {
    if let Some((user, password)) = crate::service::parse_basic(header) {
        return Some(format!("basic\0{}\0{password}", user.trim().to_lowercase()));
    }
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| format!("bearer\0{}", token.trim()))
}

impl Sessions {
    /// The options of `caller`'s session, if `user` has one.
    pub(crate) fn options(&self, caller: &Caller, user: &str) -> Options {
        let mut open = self.lock();
        match open.find(caller, user) {
            Some(id) => {
                let session = open.by_id.get_mut(&id).expect("found");
                session.used = Instant::now();
                session.options.clone()
            }
            None => Options::default(),
        }
    }

    /// Changes the options of `caller`'s session (opening one for `user` if needed) with
    /// `change`; returns the session's id, for the cookie.
    pub(crate) fn update(
        &self,
        caller: &Caller,
        user: &str,
        change: impl FnOnce(&mut Options),
    ) -> String {
        let mut open = self.lock();
        let id = match open.find(caller, user) {
            Some(id) => id,
            None => open.open(user),
        };
        if let Some(bearer) = caller.bearer {
            open.by_bearer.insert(bearer, id.clone());
        }
        let session = open.by_id.get_mut(&id).expect("just found or made");
        session.used = Instant::now();
        change(&mut session.options);
        id
    }

    /// Forgets `caller`'s session; whether there was one.
    pub(crate) fn close(&self, caller: &Caller, user: &str) -> bool {
        let mut open = self.lock();
        let Some(id) = open.find(caller, user) else {
            return false;
        };
        open.forget(&id);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Open {
    /// The id of `caller`'s live session owned by `user`: by cookie first, then by bearer.
    fn find(&mut self, caller: &Caller, user: &str) -> Option<String> {
        let live = |s: &Session| s.user == user && s.used.elapsed() < IDLE;
        if let Some(id) = &caller.cookie
            && self.by_id.get(id).is_some_and(live)
        {
            return Some(id.clone());
        }
        let id = self.by_bearer.get(caller.bearer.as_ref()?)?;
        self.by_id.get(id).is_some_and(live).then(|| id.clone())
    }

    /// A new session of `user`, after making room for it (and, at most once a minute,
    /// forgetting idle sessions, so their temporary tables go).
    fn open(&mut self, user: &str) -> String {
        if self
            .swept
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.swept = Some(Instant::now());
            self.forget_idle();
        }
        let mine = self.by_user.get(user).map_or(0, VecDeque::len);
        if mine >= PER_USER
            && let Some(oldest) = self.by_user.get(user).and_then(|ids| ids.front().cloned())
        {
            self.forget(&oldest);
        } else if self.by_id.len() >= CAPACITY {
            self.make_room();
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.by_id.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                options: Options::default(),
                used: Instant::now(),
            },
        );
        self.by_user
            .entry(user.to_string())
            .or_default()
            .push_back(id.clone());
        id
    }

    /// Removes session `id` and the credentials that named it.
    fn forget(&mut self, id: &str) {
        let Some(session) = self.by_id.remove(id) else {
            return;
        };
        if let Some(ids) = self.by_user.get_mut(&session.user) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_user.remove(&session.user);
            }
        }
        self.by_bearer.retain(|_, v| v != id);
    }

    /// Forgets idle sessions, and the least recently used one while full.
    fn make_room(&mut self) {
        self.forget_idle();
        while self.by_id.len() >= CAPACITY {
            let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.forget(&oldest);
        }
    }

    fn forget_idle(&mut self) {
        let idle: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, s)| s.used.elapsed() >= IDLE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.forget(&id);
        }
    }
}

/// `Flight.proto`'s session messages.
pub(crate) mod proto {
    use std::collections::HashMap;

    /// `SessionOptionValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SessionOptionValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5")]
        pub option_value: Option<Value>,
    }

    /// `SessionOptionValue.option_value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::enum_variant_names)] // the names of Flight.proto's oneof
    pub(crate) enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        StringListValue(StringList),
    }

    /// `SessionOptionValue.StringListValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StringList {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    /// `SetSessionOptionsRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SetSessionOptionsRequest {
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    /// `SetSessionOptionsResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SetSessionOptionsResult {
        #[prost(map = "string, message", tag = "1")]
        pub errors: HashMap<String, SetSessionOptionsError>,
    }

    /// `SetSessionOptionsResult.Error`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SetSessionOptionsError {
        #[prost(enumeration = "ErrorValue", tag = "1")]
        pub value: i32,
    }

    /// `SetSessionOptionsResult.ErrorValue`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
    #[repr(i32)]
    pub enum ErrorValue {
        Unspecified = 0,
        InvalidName = 1,
        InvalidValue = 2,
        Error = 3,
    }

    /// `GetSessionOptionsResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct GetSessionOptionsResult {
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    /// `CloseSessionResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct CloseSessionResult {
        #[prost(enumeration = "CloseStatus", tag = "1")]
        pub status: i32,
    }

    /// `CloseSessionResult.Status`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
    #[repr(i32)]
    pub enum CloseStatus {
        Unspecified = 0,
        Closed = 1,
        Closing = 2,
        NotCloseable = 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(cookie: Option<&str>, bearer: &str) -> Caller {
        let mut request = Request::new(());
        if let Some(c) = cookie {
            request
                .metadata_mut()
                .insert("cookie", format!("other=1; {COOKIE}={c}").parse().unwrap());
        }
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        Caller::of(&request)
    }

    #[test]
    fn a_session_is_found_by_cookie_or_bearer_and_only_by_its_user() {
        let sessions = Sessions::default();
        let id = sessions.update(&caller(None, "t1"), "ann", |o| {
            o.schema = Some("tpch".into())
        });
        let tpch = Some("tpch".to_string());
        assert_eq!(sessions.options(&caller(None, "t1"), "ann").schema, tpch);
        assert_eq!(
            sessions.options(&caller(Some(&id), "t2"), "ann").schema,
            tpch
        );
        // Another user presenting the cookie (or a bearer hash collision) finds nothing.
        assert_eq!(
            sessions.options(&caller(Some(&id), "t1"), "bob").schema,
            None
        );
        assert_eq!(sessions.options(&caller(None, "t3"), "ann").schema, None);
        assert!(sessions.close(&caller(Some(&id), "t9"), "ann"));
        assert_eq!(sessions.options(&caller(None, "t1"), "ann").schema, None);
        assert!(!sessions.close(&caller(None, "t1"), "ann"));
    }

    fn basic(header: &str) -> Caller {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        Caller::of(&request)
    }

    #[test]
    fn spellings_of_one_credential_share_a_session() {
        let sessions = Sessions::default();
        // "ann@example.com:pw" with and without padding, spaces and the scheme's case.
        let id = sessions.update(&basic("Basic YW5uQGV4YW1wbGUuY29tOnB3"), "ann", |o| {
            o.schema = Some("tpch".into())
        });
        for header in [
            "Basic YW5uQGV4YW1wbGUuY29tOnB3",
            "basic   YW5uQGV4YW1wbGUuY29tOnB3  ",
            "Basic YW5uQGV4YW1wbGUuY29tOnB3==",
        ] {
            assert_eq!(
                sessions.update(&basic(header), "ann", |_| {}),
                id,
                "{header}"
            );
        }
        assert_eq!(sessions.update(&basic("Bearer  t1 "), "ann", |_| {}), {
            sessions.update(&basic("bearer t1"), "ann", |_| {})
        });
        assert_eq!(sessions.lock().by_id.len(), 2);
    }

    #[test]
    fn one_user_cannot_push_out_another_users_session() {
        let sessions = Sessions::default();
        let kept = sessions.update(&caller(None, "bob-token"), "bob", |o| {
            o.schema = Some("tpch".into())
        });
        for i in 0..PER_USER + 50 {
            sessions.update(&caller(None, &format!("t{i}")), "mallory", |_| {});
        }
        let open = sessions.lock();
        assert_eq!(open.by_user["mallory"].len(), PER_USER);
        assert_eq!(open.by_id.len(), PER_USER + 1);
        assert!(open.by_id.contains_key(&kept));
        assert_eq!(open.by_bearer.len(), PER_USER + 1);
    }
}
