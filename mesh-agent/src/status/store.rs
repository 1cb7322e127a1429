//! One kind's objects as the status writer's watcher last reported them, and
//! what changed. A relist (`Init` … `InitDone`: at start, after a reconnect or
//! a `410 Gone`) is buffered and swapped in whole, as the agents' mirror does,
//! so that nothing is computed from a half-listed kind.

use std::collections::HashMap;

use kube::runtime::watcher::Event;

#[derive(Debug)]
pub struct Store<T> {
    live: HashMap<String, T>,
    relist: Option<HashMap<String, T>>,
    synced: bool,
}

/// What an event changed: nothing, one object (by key), or possibly everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    One(String),
    All,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            live: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<T> Store<T> {
    /// Applies one watcher event; `key` names an object, `read` makes its stored form.
    pub fn apply<K>(
        &mut self,
        event: Event<K>,
        key: impl Fn(&K) -> String,
        read: impl FnOnce(K) -> T,
    ) -> Change {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                Change::None
            }
            Event::InitApply(obj) => {
                let k = key(&obj);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(k, read(obj));
                Change::None
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.synced = true;
                Change::All
            }
            Event::Apply(obj) => {
                let k = key(&obj);
                self.live.insert(k.clone(), read(obj));
                self.change(k)
            }
            Event::Delete(obj) => {
                let k = key(&obj);
                match self.live.remove(&k) {
                    Some(_) => self.change(k),
                    None => Change::None,
                }
            }
        }
    }

    fn change(&self, key: String) -> Change {
        if self.synced {
            Change::One(key)
        } else {
            Change::None
        }
    }

    /// A kind the cluster does not serve (its CRD is not installed): synced, empty.
    pub fn mark_absent(&mut self) -> Change {
        let changed = !self.synced || !self.live.is_empty();
        self.live.clear();
        self.relist = None;
        self.synced = true;
        if changed { Change::All } else { Change::None }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.live.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.live.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(x: &(&'static str, u32)) -> String {
        x.0.to_owned()
    }
    fn read(x: (&'static str, u32)) -> u32 {
        x.1
    }

    #[test]
    fn a_relist_is_swapped_in_whole_and_changes_everything() {
        let mut s = Store::default();
        assert_eq!(s.apply(Event::Init, key, read), Change::None);
        assert_eq!(s.apply(Event::InitApply(("a", 1)), key, read), Change::None);
        assert!(!s.synced());
        assert_eq!(s.apply(Event::InitDone, key, read), Change::All);
        assert_eq!(
            s.apply(Event::Apply(("b", 2)), key, read),
            Change::One("b".into())
        );
        s.apply(Event::Init, key, read);
        s.apply(Event::InitApply(("b", 3)), key, read);
        assert_eq!(
            s.get("a"),
            Some(&1),
            "the old objects stay until the relist ends"
        );
        assert_eq!(s.apply(Event::InitDone, key, read), Change::All);
        assert_eq!((s.get("a"), s.get("b")), (None, Some(&3)));
        assert_eq!(
            s.apply(Event::Delete(("b", 0)), key, read),
            Change::One("b".into())
        );
        assert_eq!(s.apply(Event::Delete(("b", 0)), key, read), Change::None);
    }

    #[test]
    fn an_absent_kind_is_synced_and_empty() {
        let mut s: Store<u32> = Store::default();
        assert_eq!(s.mark_absent(), Change::All);
        assert!(s.synced());
        assert_eq!(s.mark_absent(), Change::None);
    }
}
