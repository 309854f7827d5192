//! Users and what they may do: the one place where access rules are decided.
//!
//! A server configured with users (`[users.NAME]` in the config file) identifies each
//! connection by which user's key answered the handshake challenge
//! ([`agora_proto::io::server_handshake_any`]), so a stock CPython client needs no
//! change: it just holds its user's key. Each user has rules, object-name patterns
//! (globs: `*` any run of characters, `?` one) each with a [`Level`]; the highest level
//! among the rules whose pattern matches a name is what the user may do to the object
//! of that name:
//!
//! - [`Level::Read`]: open an existing named object, call its read-only methods
//!   (`MethodSpec::read_only`), copy it and see who holds it (`agora get`,
//!   `#GETVALUE`), see it listed (`agora ls`);
//! - [`Level::Write`]: also every other method, and create the object;
//! - [`Level::Admin`]: also delete it. A rule whose pattern is
//!   exactly `*` with `admin` makes a *server admin*, who alone may shut the server
//!   down, write a snapshot, read the server's statistics and CPython's `debug_info`.
//!
//! Anonymous objects (Python's `m.dict()`, a Rust `Open` without a name, a dict's
//! iterator) belong to the user whose connection made them ([`Owners`]) and only that
//! user reaches them, by id or otherwise; a server admin reaches them too. The owner is
//! kept here, beside the engine rather than in it: objects never know users, the
//! engine's replayed state stays the same with or without users, and a map keyed by id
//! (ids are never reused) is all it takes. The price: owners are not kept across a
//! restart, so an anonymous object that survives one (held by a named object) is
//! reachable by server admins only.
//!
//! With no users configured there is one implicit user ([`Who::Anyone`]) allowed
//! everything, exactly as before users existed; the only rule left is
//! `--allow-remote-shutdown` ([`crate::server::Shared::may_shut_down`]).
//!
//! This module decides and records owners; it must not touch connections, the wire or
//! object state. Both dialects call it before turning a request into a command.

use std::collections::HashMap;
use std::sync::Mutex;

use agora_proto::{ErrorCode, WireError};

use crate::server::Shared;
use agora_proto::native::{Args, ObjectId};
use agora_proto::reference::referenced_ids;

/// What a rule lets a user do to the objects it matches; each level includes the ones
/// below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Open existing objects and call their read-only methods.
    Read,
    /// Also call every other method and create the object.
    Write,
    /// Also delete the object.
    Admin,
}

impl Level {
    /// The level's name in the config file: `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Level, String> {
        match text {
            "read" => Ok(Level::Read),
            "write" => Ok(Level::Write),
            "admin" => Ok(Level::Admin),
            other => Err(format!("unknown access '{other}': it must be read, write or admin")),
        }
    }
}

/// One rule: the objects whose names match `pattern` may be used up to `level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A glob over object names: `*` matches any run of characters (dots too), `?` one.
    pub pattern: String,
    /// What the rule allows.
    pub level: Level,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" = {}", self.pattern, self.level)
    }
}

/// True if `name` matches the glob `pattern` (`*`: any run, `?`: one character).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and where in the name it started matching: on a mismatch
    // it takes one more character (linear backtracking, no recursion).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A configured user: a name, its key, its rules.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name (in errors and logs).
    pub name: String,
    /// The key its clients authenticate with.
    pub key: Vec<u8>,
    /// What it may do.
    pub rules: Vec<Rule>,
}

impl std::fmt::Debug for User {
    // The key stays out of logs and debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("name", &self.name).field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl User {
    /// The most permissive rule matching `name`, if any.
    pub fn rule_for(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().filter(|r| glob_matches(&r.pattern, name)).max_by_key(|r| r.level)
    }

    /// True if a rule `"*" = admin` makes this user a server admin.
    pub fn is_server_admin(&self) -> bool {
        self.rules.iter().any(|r| r.pattern == "*" && r.level == Level::Admin)
    }

    fn rules_text(&self) -> String {
        if self.rules.is_empty() {
            return "it has no rules".to_owned();
        }
        let rules: Vec<String> = self.rules.iter().map(Rule::to_string).collect();
        format!("its rules are {}", rules.join(", "))
    }
}

/// Who a connection is: fixed at the handshake, asked by every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No users are configured: the one implicit user, allowed everything.
    Anyone,
    /// The configured user at this index of [`crate::Config::users`].
    User(usize),
}

/// The anonymous objects' owners, by object id (only with users configured).
#[derive(Debug, Default)]
pub struct Owners {
    inner: Mutex<OwnersInner>,
}

#[derive(Debug, Default)]
struct OwnersInner {
    by_object: HashMap<ObjectId, usize>,
    /// The map's size after its last pruning: freed objects are pruned when it doubles.
    pruned_at: usize,
}

impl Owners {
    fn inner(&self) -> std::sync::MutexGuard<'_, OwnersInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn of(&self, object: ObjectId) -> Option<usize> {
        self.inner().by_object.get(&object).copied()
    }

    /// How many owners are recorded (freed objects may linger until the next pruning).
    pub fn len(&self) -> usize {
        self.inner().by_object.len()
    }

    /// True if no owner is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that `user` made `object`, unless its owner is known already. Objects the
    /// engine freed meanwhile are forgotten whenever the map has doubled since the last
    /// time, so the map stays proportional to the live anonymous objects.
    fn record(&self, object: ObjectId, user: usize, exists: impl Fn(ObjectId) -> bool) {
        let mut inner = self.inner();
        inner.by_object.entry(object).or_insert(user);
        if inner.by_object.len() >= 2 * inner.pruned_at.max(512) {
            inner.by_object.retain(|&id, _| exists(id));
            inner.pruned_at = inner.by_object.len();
        }
    }
}

/// The refusal for `user`, naming what it tried and why it may not.
fn denied(user: &User, message: String) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, format!("user '{}' {message}", user.name))
}

impl Who {
    /// The user a cluster follower authenticated a client as, told by name: who it is
    /// among `users` (this node's), or why the name does not fit them (the nodes'
    /// `[users]` differ).
    pub fn by_name(users: &[User], name: Option<&str>) -> Result<Who, String> {
        match name {
            None if users.is_empty() => Ok(Who::Anyone),
            None => Err("the follower authenticated the client without users, but the leader has users: give \
                         every node the same [users]"
                .to_owned()),
            Some(name) => users.iter().position(|u| u.name == name).map(Who::User).ok_or_else(|| {
                format!(
                    "the follower authenticated the client as user {name:?}, whom the leader does not know: give \
                     every node the same [users]"
                )
            }),
        }
    }

    /// The configured user this is, or `None` for the implicit one.
    pub fn user<'a>(&self, shared: &'a Shared) -> Option<&'a User> {
        match *self {
            Who::Anyone => None,
            Who::User(at) => shared.config.users.get(at),
        }
    }

    /// The user whose rules apply: `None` for the implicit user (no rules), an error
    /// rather than no rules for an index that names no user (it never should).
    fn rules<'a>(&self, shared: &'a Shared) -> Result<Option<&'a User>, WireError> {
        match *self {
            Who::Anyone => Ok(None),
            Who::User(at) => shared.config.users.get(at).map(Some).ok_or_else(|| {
                WireError::new(ErrorCode::Internal, format!("connection of user #{at}, which is not configured"))
            }),
        }
    }

    /// The key this connection authenticated with (the one CPython clients on this
    /// machine get back inside nested proxies).
    pub fn key<'a>(&self, shared: &'a Shared) -> &'a [u8] {
        self.user(shared).map_or(&shared.config.authkey, |u| &u.key)
    }

    /// Fails unless this user may use the object named `name` at `level`; `what`
    /// says what was attempted, for the message.
    pub fn named(&self, shared: &Shared, name: &str, level: Level, what: &str) -> Result<(), WireError> {
        let Some(user) = self.rules(shared)? else { return Ok(()) };
        match user.rule_for(name) {
            Some(rule) if rule.level >= level => Ok(()),
            Some(rule) => Err(denied(
                user,
                format!("may not {what} '{name}': its rule {rule} allows {}, this needs {level}", allows(rule.level)),
            )),
            None => Err(denied(user, format!("may not {what} '{name}': no rule matches it ({})", user.rules_text()))),
        }
    }

    /// True if this user may use the object named `name` at `level` (for lists, which
    /// leave out what the user may not see).
    pub fn may(&self, shared: &Shared, name: &str, level: Level) -> bool {
        self.named(shared, name, level, "").is_ok()
    }

    /// Fails unless this user may call `method` on object `object`: a read-only method
    /// needs read, any other write, on a named object; an anonymous object must be
    /// this user's own. A method that stores its arguments must not store a reference
    /// to an object the user may not read (a container pins what it holds, and hands
    /// it to whoever reads the container). A missing object fails as the call would.
    /// Inlined for the implicit user, whom every call asks about and nothing restricts:
    /// out of line, the answer cost ~30 instructions per call.
    #[inline]
    pub fn call(&self, shared: &Shared, object: ObjectId, method: &str, args: &Args) -> Result<(), WireError> {
        match self {
            Who::Anyone => Ok(()),
            Who::User(_) => self.call_checked(shared, object, method, args),
        }
    }

    /// [`Who::call`] for a configured user.
    fn call_checked(&self, shared: &Shared, object: ObjectId, method: &str, args: &Args) -> Result<(), WireError> {
        if self.rules(shared)?.is_none() {
            return Ok(());
        }
        let facts = shared.parking.engine().access_facts(object, method)?;
        let level = if facts.read_only { Level::Read } else { Level::Write };
        self.reach(shared, object, facts.name.as_deref(), level, &format!("call '{method}' on"))?;
        if facts.stores {
            self.references(shared, args, Level::Read, "store a reference to")?;
        }
        Ok(())
    }

    /// Fails unless this user may use every object referenced in `args` at `level`.
    pub fn references(&self, shared: &Shared, args: &Args, level: Level, what: &str) -> Result<(), WireError> {
        if self.rules(shared)?.is_none() {
            return Ok(());
        }
        let mut referenced = Vec::new();
        for value in args.positional.iter().chain(args.keywords.iter().map(|(_, v)| v)) {
            referenced_ids(value, &mut referenced);
        }
        referenced.iter().try_for_each(|&id| self.object(shared, id, level, what))
    }

    /// Fails unless this user may reach object `object` at `level` by id (take or give
    /// back a reference, copy it, list its methods).
    pub fn object(&self, shared: &Shared, object: ObjectId, level: Level, what: &str) -> Result<(), WireError> {
        if self.rules(shared)?.is_none() {
            return Ok(());
        }
        let facts = shared.parking.engine().access_facts(object, "")?;
        self.reach(shared, object, facts.name.as_deref(), level, what)
    }

    fn reach(
        &self,
        shared: &Shared,
        object: ObjectId,
        name: Option<&str>,
        level: Level,
        what: &str,
    ) -> Result<(), WireError> {
        let (Who::User(me), Some(user)) = (*self, self.rules(shared)?) else { return Ok(()) };
        if let Some(name) = name {
            return self.named(shared, name, level, what);
        }
        match shared.owners.of(object) {
            Some(owner) if owner == me => Ok(()),
            _ if user.is_server_admin() => Ok(()),
            Some(owner) => {
                let owner = shared.config.users.get(owner).map_or("?", |u| u.name.as_str());
                Err(denied(
                    user,
                    format!("may not {what} object {object:x}: it is an anonymous object of user '{owner}'"),
                ))
            }
            None => Err(denied(
                user,
                format!(
                    "may not {what} object {object:x}: it is an anonymous object made before the server \
                     restarted, whose owner is not known; only a server admin (rule \"*\" = admin) may reach it"
                ),
            )),
        }
    }

    /// Fails unless this user may open the object `name` (get-or-create): opening an
    /// existing object needs read, creating one write. Anonymous objects (`name` is
    /// `None`) are the user's own and anyone may make them.
    pub fn open(&self, shared: &Shared, name: Option<&str>) -> Result<(), WireError> {
        let (Some(user), Some(name)) = (self.rules(shared)?, name) else { return Ok(()) };
        self.named(shared, name, Level::Read, "open")?;
        if user.rule_for(name).is_some_and(|r| r.level >= Level::Write) || shared.parking.engine().name_exists(name) {
            return Ok(());
        }
        self.named(shared, name, Level::Write, "create")
    }

    /// After an open: records this user as the owner of the anonymous object it just
    /// made; for a named object the open *created*, fails unless the user may create
    /// it (a user who may only read passed [`Who::open`] because the name existed,
    /// and it was deleted before the open; the caller undoes the creation).
    pub fn opened(
        &self,
        shared: &Shared,
        object: ObjectId,
        name: Option<&str>,
        created: bool,
    ) -> Result<(), WireError> {
        let Who::User(me) = *self else { return Ok(()) };
        match name {
            None => {
                let engine = shared.parking.engine();
                shared.owners.record(object, me, |id| engine.exists(id));
                Ok(())
            }
            Some(name) if created => self.named(shared, name, Level::Write, "create"),
            Some(_) => Ok(()),
        }
    }

    /// Fails unless this is a server admin (or the implicit user): for `what`, an
    /// operation on the whole server.
    pub fn server_admin(&self, shared: &Shared, what: &str) -> Result<(), WireError> {
        match self.rules(shared)? {
            None => Ok(()),
            Some(user) if user.is_server_admin() => Ok(()),
            Some(user) => Err(denied(
                user,
                format!(
                    "may not {what}: that needs a server admin, a user with the rule \"*\" = admin ({})",
                    user.rules_text()
                ),
            )),
        }
    }

    /// Fails unless this connection may shut the server down: the implicit user as
    /// `--allow-remote-shutdown` says, a configured user only as a server admin
    /// (from anywhere: the rule is the grant).
    pub fn shutdown(&self, shared: &Shared, local_peer: bool) -> Result<(), WireError> {
        match self {
            Who::Anyone => shared.may_shut_down(local_peer),
            Who::User(_) => self.server_admin(shared, "shut the server down"),
        }
    }
}

/// What a level allows, in words.
fn allows(level: Level) -> &'static str {
    match level {
        Level::Read => "only reading",
        Level::Write => "reading and writing",
        Level::Admin => "everything",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, name, expected) in [
            ("*", "anything.at.all", true),
            ("*", "", true),
            ("jobs.*", "jobs.a", true),
            ("jobs.*", "jobs.a.b", true),
            ("jobs.*", "jobs", false),
            ("jobs.*", "xjobs.a", false),
            ("jobs", "jobs", true),
            ("jobs", "jobs2", false),
            ("j?bs", "jobs", true),
            ("*.log", "a.b.log", true),
            ("*.log", "a.log.x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("**", "x", true),
            ("é*", "été", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn a_user_named_by_a_follower_is_found_by_name_or_refused_with_the_reason() {
        let users = vec![user(&[]), User { name: "eve".into(), key: b"e".to_vec(), rules: vec![] }];
        assert!(matches!(Who::by_name(&users, Some("eve")), Ok(Who::User(1))));
        assert!(matches!(Who::by_name(&[], None), Ok(Who::Anyone)));
        let unknown = Who::by_name(&users, Some("mallory")).unwrap_err();
        assert!(unknown.contains("\"mallory\"") && unknown.contains("same [users]"), "{unknown}");
        assert!(Who::by_name(&users, None).unwrap_err().contains("leader has users"));
        assert!(Who::by_name(&[], Some("eve")).unwrap_err().contains("does not know"));
    }

    fn user(rules: &[(&str, Level)]) -> User {
        User {
            name: "bob".into(),
            key: b"k".to_vec(),
            rules: rules.iter().map(|(p, l)| Rule { pattern: (*p).into(), level: *l }).collect(),
        }
    }

    #[test]
    fn the_most_permissive_matching_rule_wins_whatever_the_order() {
        let u = user(&[("jobs.*", Level::Write), ("*", Level::Read), ("jobs.secret", Level::Admin)]);
        assert_eq!(u.rule_for("jobs.a").unwrap().level, Level::Write);
        assert_eq!(u.rule_for("other").unwrap().level, Level::Read);
        assert_eq!(u.rule_for("jobs.secret").unwrap().level, Level::Admin);
        assert!(!u.is_server_admin());
        assert!(user(&[("*", Level::Admin)]).is_server_admin());
        assert!(user(&[]).rule_for("x").is_none());
    }

    #[test]
    fn levels_read_and_order() {
        assert!(Level::Read < Level::Write && Level::Write < Level::Admin);
        for level in [Level::Read, Level::Write, Level::Admin] {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
        assert!("owner".parse::<Level>().unwrap_err().contains("read, write or admin"));
    }

    #[test]
    fn a_users_key_stays_out_of_debug_output() {
        let u = User { name: "bob".into(), key: b"s3cret-key".to_vec(), rules: vec![] };
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn owners_are_pruned_of_freed_objects_as_the_map_grows() {
        let owners = Owners::default();
        for id in 0..2000 {
            // Only even ids are still alive.
            owners.record(id, 0, |id| id % 2 == 0);
        }
        assert!(owners.len() < 2000, "freed objects were forgotten: {}", owners.len());
        assert_eq!(owners.of(1998), Some(0));
        owners.record(1998, 1, |_| true);
        assert_eq!(owners.of(1998), Some(0), "the first owner stays");
    }
}
