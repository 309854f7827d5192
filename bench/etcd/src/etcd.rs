//! The operations against etcd, through its v3 gRPC API (etcd-client).

use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};

use crate::{value, Result, Slot, Test, Worker};

pub struct EtcdWorker {
    client: Client,
    slot: Slot,
    test: Test,
    /// cas: the worker's key and the number its value was made of; lock: the lease.
    cas_key: String,
    current: u64,
    lease: i64,
}

/// One gRPC channel per client (connected to `address` only), shared by its workers.
pub async fn workers(address: &str, slots: Vec<Vec<Slot>>, test: Test) -> Result<Vec<EtcdWorker>> {
    let mut workers = Vec::new();
    for client_slots in slots {
        let client = Client::connect([address], None).await?;
        for slot in client_slots {
            let mut w = EtcdWorker {
                client: client.clone(),
                cas_key: format!("cas:{}", slot.worker),
                slot,
                test,
                current: 0,
                lease: 0,
            };
            match test {
                Test::Cas => {
                    w.client.put(w.cas_key.clone(), value(0), None).await?;
                }
                // The lock service ties the lock's key to a lease; one per worker,
                // long enough for the run (a lease shared by two waiters would let
                // both hold the lock).
                Test::Lock | Test::LockContended => w.lease = w.client.lease_grant(600, None).await?.id(),
                _ => {}
            }
            workers.push(w);
        }
    }
    Ok(workers)
}

impl Worker for EtcdWorker {
    async fn op(&mut self, i: u64) -> Result<bool> {
        match self.test {
            Test::Fill => {
                if let Some(key) = self.slot.fill_key(i) {
                    self.client.put(key, value(i), None).await?;
                }
            }
            Test::Put => {
                let key = self.slot.random_key();
                self.client.put(key, value(i), None).await?;
            }
            Test::Get => {
                let key = self.slot.random_key();
                // A linearizable read (etcd's default; agora's reads are linearizable too).
                let found = self.client.get(key, None).await?;
                if found.kvs().is_empty() {
                    return Err("a key of the fill is missing".into());
                }
            }
            Test::Cas => {
                let (old, new) = (value(self.current), value(self.current + 1));
                let txn = Txn::new()
                    .when([Compare::value(self.cas_key.clone(), CompareOp::Equal, old)])
                    .and_then([TxnOp::put(self.cas_key.clone(), new, None)]);
                if !self.client.txn(txn).await?.succeeded() {
                    return Ok(false);
                }
                self.current += 1;
            }
            Test::Lock | Test::LockContended => {
                let options = LockOptions::new().with_lease(self.lease);
                let granted = self.client.lock(self.slot.lock.name.clone(), Some(options)).await?;
                // The fencing token: the revision of the response header, which is the
                // revision that created the holder's key (uncontended) or one at
                // which every earlier holder's key was already deleted (after a wait).
                let token = granted.header().ok_or("a lock response without a header")?.revision();
                self.slot.lock.check(token as u64);
                self.client.unlock(granted.key()).await?;
            }
        }
        Ok(true)
    }
}

/// A client of every member (etcd-client balances requests over them).
pub async fn failover_client(addresses: &[String]) -> Result<Client> {
    Ok(Client::connect(addresses, None).await?)
}
