//! The operations against agora, through its typed Rust client.

use agora_client::{Address, Dict, Lock, Manager, ManagerOptions};

use crate::{value, Result, Slot, Test, Worker};

pub struct AgoraWorker {
    dict: Dict<String, Vec<u8>>,
    lock: Option<Lock>,
    slot: Slot,
    test: Test,
    /// cas: the worker's key and the number its value was made of.
    cas_key: String,
    current: u64,
}

/// The authkey as `agora bench` reads it: the contents of the file AGORA_AUTHKEY_FILE
/// names, less one trailing newline.
fn authkey() -> Result<Vec<u8>> {
    let path = std::env::var_os(agora_client::AUTHKEY_FILE_ENV).ok_or("set AGORA_AUTHKEY_FILE")?;
    Ok(agora_client::proto::keyfile::read(path.as_ref())?)
}

/// One Manager (one connection) per client, shared by its workers.
pub async fn workers(address: &str, slots: Vec<Vec<Slot>>, test: Test) -> Result<Vec<AgoraWorker>> {
    let authkey = authkey()?;
    let mut workers = Vec::new();
    for client_slots in slots {
        let manager = Manager::connect(address, &authkey).await?;
        for slot in client_slots {
            let dict = manager.dict::<String, Vec<u8>>("bench").await?;
            let lock = match test {
                Test::Lock | Test::LockContended => Some(manager.lock(&slot.lock.name).await?),
                _ => None,
            };
            let cas_key = format!("cas:{}", slot.worker);
            if test == Test::Cas {
                dict.insert(&cas_key, &value(0)).await?;
            }
            workers.push(AgoraWorker { dict, lock, slot, test, cas_key, current: 0 });
        }
    }
    Ok(workers)
}

impl Worker for AgoraWorker {
    async fn op(&mut self, i: u64) -> Result<bool> {
        match self.test {
            Test::Fill => {
                if let Some(key) = self.slot.fill_key(i) {
                    self.dict.insert(&key, &value(i)).await?;
                }
            }
            Test::Put => self.dict.insert(&self.slot.random_key(), &value(i)).await?,
            Test::Get => {
                if self.dict.get(&self.slot.random_key()).await?.is_none() {
                    return Err("a key of the fill is missing".into());
                }
            }
            Test::Cas => {
                let (old, new) = (value(self.current), value(self.current + 1));
                if !self.dict.compare_and_set(&self.cas_key, Some(&old), &new).await? {
                    return Ok(false);
                }
                self.current += 1;
            }
            Test::Lock | Test::LockContended => {
                let guard = self.lock.as_ref().expect("a lock test has its lock").acquire().await?;
                self.slot.lock.check(guard.token());
                guard.release().await?;
            }
        }
        Ok(true)
    }
}

/// A dict reached through the first of `addresses` that answers; on losing it the
/// manager reconnects to the next (Manager::connect_any).
pub async fn failover_dict(addresses: &[String]) -> Result<Dict<String, Vec<u8>>> {
    let addresses = addresses.iter().map(|a| a.parse::<Address>()).collect::<std::result::Result<Vec<_>, _>>()?;
    let manager = Manager::connect_any(addresses, authkey()?, ManagerOptions::new()).await?;
    Ok(manager.dict::<String, Vec<u8>>("failover").await?)
}
