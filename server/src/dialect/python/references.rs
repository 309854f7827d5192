//! Nested proxies: references to managed objects inside values (spec §3.6, §4.4).
//!
//! A CPython client stores a proxy inside a managed object (`d['inner'] = m.list()`)
//! as a pickled `RebuildProxy(ProxyClass, Token(typeid, address, ident), 'pickle',
//! kwds)`; agora keeps it as an opaque value and recognises it by ident, never by
//! address. Two things happen around it here:
//!
//! - **Incoming**: the object a reference is stored into keeps the referenced object
//!   alive until it is freed itself, so `del` of the client's own proxy does not free a
//!   list still kept in a dict. The engine does this for both dialects (methods declared
//!   as storing their arguments; see [`crate::engine`]). CPython's server does the same
//!   in effect (it keeps such objects in `id_to_local_proxy_obj`, forever).
//! - **Outgoing** ([`Outgoing::localize`]): CPython's client rebuilds a nested proxy
//!   with `current_process().authkey`, so a client whose process key is not the
//!   server's fails to use it (CPython issue #78740). `RebuildProxy` passes `kwds` to
//!   the proxy constructor, which takes `authkey`; so to a peer on this machine (Unix
//!   socket, loopback TCP) — which has just proved it knows the key — agora adds
//!   `'authkey': key` to each reference it sends, and nested proxies just work. Over
//!   other TCP the key is never sent (it would cross the network in clear); such
//!   clients set `multiprocessing.current_process().authkey = key`. The key is only
//!   added to outgoing copies, never stored. A reference made by a native client has
//!   no address; it gets the address this connection reached the server at — or,
//!   where the listener advertises another (`--advertise`, for NAT, containers and
//!   proxies), every reference gets the advertised address, since a client of that
//!   listener may not be able to dial the address another client stored.

use agora_proto::value::{Build, Object};
use agora_proto::{Address, Value};

const MANAGERS: &str = "multiprocessing.managers";

/// Runs `f` on every value inside an opaque object, mutably. (Set members and dict
/// keys are left alone: they are hashed, and a proxy is not a useful key.)
fn visit_object_mut(object: &mut Object, f: &mut dyn FnMut(&mut Value)) {
    match &mut object.build {
        Build::Global => {}
        Build::Reduce(args) | Build::NewObj(args) => args.iter_mut().for_each(&mut *f),
        Build::NewObjEx(args, kwargs) => {
            args.iter_mut().for_each(&mut *f);
            kwargs.iter_mut().for_each(|(_, v)| f(v));
        }
    }
    if let Some(state) = &mut object.state {
        f(state);
    }
    object.list_items.iter_mut().for_each(&mut *f);
    object.dict_items.iter_mut().for_each(|(_, v)| f(v));
}

/// How references are rewritten on their way to one client.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The authkey to add to each reference (local peers only).
    pub authkey: Option<Vec<u8>>,
    /// The address to give references that have none (made by native clients).
    pub address: Option<Value>,
    /// Give every reference [`Outgoing::address`], also those a CPython client stored
    /// with the address it dialled: the listener advertises the address its clients
    /// must dial (`--advertise`), or it is a TLS listener, whose clients dial it with
    /// TLS; every reference names an object of this server.
    pub every_reference: bool,
    /// The transport to name in every reference (`agora+tls` on a TLS listener, so a
    /// CPython client rebuilds the proxy with `agora.tls`'s transport).
    pub serializer: Option<&'static str>,
}

/// The transport `agora.tls` registers in CPython's `multiprocessing.managers`.
pub const TLS_SERIALIZER: &str = "agora+tls";

impl Outgoing {
    /// The rewriting for a connection: the key only for a local peer; `address` is
    /// what the connection reached, or what its listener advertises (`advertised`).
    pub fn new(peer_is_local: bool, authkey: &[u8], address: Option<&Address>, advertised: bool) -> Outgoing {
        let tls = matches!(address, Some(Address::Tls { .. }));
        Outgoing {
            authkey: peer_is_local.then(|| authkey.to_vec()),
            address: address.and_then(python_address),
            every_reference: advertised || tls,
            serializer: tls.then_some(TLS_SERIALIZER),
        }
    }

    /// True if nothing would be rewritten.
    fn is_noop(&self) -> bool {
        self.authkey.is_none() && self.address.is_none() && self.serializer.is_none()
    }

    /// Rewrites every reference inside `value` for this client.
    pub fn localize(&self, value: &mut Value) {
        if !self.is_noop() {
            self.visit(value);
        }
    }

    fn visit(&self, value: &mut Value) {
        match value {
            Value::List(items) | Value::Tuple(items) => items.iter_mut().for_each(|v| self.visit(v)),
            Value::Dict(dict) => dict.values_mut().for_each(|v| self.visit(v)),
            Value::Object(object) => {
                if is_rebuild_proxy(object) {
                    self.rewrite(object);
                } else {
                    visit_object_mut(object, &mut |v| self.visit(v));
                }
            }
            _ => {}
        }
    }

    /// `RebuildProxy(cls, token, serializer, kwds)`: fill the token's address, name the
    /// transport, add the key.
    fn rewrite(&self, rebuild: &mut Object) {
        let Build::Reduce(args) = &mut rebuild.build else { return };
        if let (Some(serializer), Some(slot)) = (self.serializer, args.get_mut(2)) {
            *slot = Value::Str(serializer.into());
        }
        if let (Some(address), Some(Value::Object(token))) = (&self.address, args.get_mut(1)) {
            if let Some(Value::Tuple(state)) = &mut token.state {
                match state.get_mut(1) {
                    Some(slot @ Value::None) => *slot = address.clone(),
                    Some(slot) if self.every_reference => *slot = address.clone(),
                    _ => {}
                }
            }
        }
        if let (Some(key), Some(Value::Dict(kwds))) = (&self.authkey, args.get_mut(3)) {
            // A str key is always hashable: this cannot fail.
            let _ = kwds.insert(Value::Str("authkey".into()), Value::Bytes(key.clone()));
        }
    }
}

fn is_rebuild_proxy(object: &Object) -> bool {
    object.module == MANAGERS && object.qualname == "RebuildProxy"
}

/// An address as CPython's `multiprocessing.connection` spells it: `(host, port)`,
/// a path, or `b'\0name'` for an abstract socket.
fn python_address(address: &Address) -> Option<Value> {
    Some(match address {
        // A TLS client dials the same (host, port) with its TLS transport.
        Address::Tcp { host, port } | Address::Tls { host, port } => {
            Value::Tuple(vec![Value::Str(host.clone().into()), Value::Int(i64::from(*port))])
        }
        Address::Unix(path) => Value::Str(path.to_str()?.to_owned().into()),
        Address::Abstract(name) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            Value::Bytes(bytes)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::reference::ObjectRef;
    use agora_proto::value::Dict;

    fn kwds_of(value: &Value) -> Dict {
        let Value::Object(o) = value else { panic!() };
        let Build::Reduce(args) = &o.build else { panic!() };
        let Value::Dict(d) = &args[3] else { panic!() };
        d.clone()
    }

    #[test]
    fn local_peers_get_the_key_and_missing_addresses() {
        let mut value = Value::List(vec![ObjectRef::new(0xab, "list").to_value()]);
        let local = Outgoing::new(true, b"k", Some(&"127.0.0.1:7".parse().unwrap()), false);
        local.localize(&mut value);
        let Value::List(items) = &value else { panic!() };
        let kwds = kwds_of(&items[0]);
        assert_eq!(kwds.get(&Value::Str("authkey".into())).unwrap(), Some(&Value::Bytes(b"k".to_vec())));
        let back = ObjectRef::from_value(&items[0]).unwrap();
        assert_eq!(back.address, Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(7)]));

        // A stored address is kept; a remote peer never gets the key.
        let mut remote = ObjectRef::new(0xab, "list");
        remote.address = Value::Str("/tmp/s".into());
        let mut value = remote.to_value();
        Outgoing::new(false, b"k", Some(&"10.0.0.1:7".parse().unwrap()), false).localize(&mut value);
        assert!(kwds_of(&value).is_empty());
        assert_eq!(ObjectRef::from_value(&value).unwrap().address, Value::Str("/tmp/s".into()));

        // Behind an advertised address, every reference gets it.
        let mut value = remote.to_value();
        Outgoing::new(false, b"k", Some(&"public.example:7".parse().unwrap()), true).localize(&mut value);
        let advertised = Value::Tuple(vec![Value::Str("public.example".into()), Value::Int(7)]);
        assert_eq!(ObjectRef::from_value(&value).unwrap().address, advertised);

        // On a TLS listener every reference names its address and the TLS transport.
        let mut value = remote.to_value();
        Outgoing::new(false, b"k", Some(&"tls://127.0.0.1:9".parse().unwrap()), false).localize(&mut value);
        let Value::Object(rebuild) = &value else { panic!() };
        let Build::Reduce(args) = &rebuild.build else { panic!() };
        assert_eq!(args[2], Value::Str(TLS_SERIALIZER.into()));
        let tls_address = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(9)]);
        assert_eq!(ObjectRef::from_value(&value).unwrap().address, tls_address);
    }
}
