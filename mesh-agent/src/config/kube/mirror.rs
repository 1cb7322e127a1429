//! One kind's objects as the watcher last reported them. A relist (`Init` …
//! `InitDone`, after a start, a reconnect or a `410 Gone`) is buffered and swapped
//! in whole, so the state never sees a half-listed kind and objects deleted while
//! the watch was down disappear at the swap.

use std::collections::HashMap;

use kube::runtime::watcher::Event;

/// `namespace/name` (or `name` for cluster-scoped kinds) → the stored form.
#[derive(Debug)]
pub struct Mirror<T> {
    live: HashMap<String, T>,
    relist: Option<HashMap<String, T>>,
    synced: bool,
}

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Mirror {
            live: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<T> Mirror<T> {
    /// Applies one watcher event; `store` turns an object and the stored form of
    /// its previous version (if any) into its key and stored form (`None`: not
    /// kept). Returns whether what the state sees changed.
    pub fn apply<K>(
        &mut self,
        event: Event<K>,
        store: impl Fn(K, Option<&T>) -> Option<(String, T)>,
        key: impl Fn(&K) -> String,
    ) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                let previous = self.live.get(&key(&obj));
                if let Some((k, v)) = store(obj, previous) {
                    self.relist.get_or_insert_with(HashMap::new).insert(k, v);
                }
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                let k = key(&obj);
                match store(obj, self.live.get(&k)) {
                    Some((k, v)) => {
                        self.live.insert(k, v);
                    }
                    None => {
                        self.live.remove(&k);
                    }
                }
                self.synced
            }
            Event::Delete(obj) => self.live.remove(&key(&obj)).is_some() && self.synced,
        }
    }

    /// A kind the cluster does not serve (its CRD is not installed) counts as
    /// synced and empty, so that readiness does not wait for it.
    pub fn mark_absent(&mut self) -> bool {
        let changed = !self.synced || !self.live.is_empty();
        self.live.clear();
        self.relist = None;
        self.synced = true;
        changed
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.live.values()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(x: (&'static str, u32), _: Option<&u32>) -> Option<(String, u32)> {
        (x.1 > 0).then(|| (x.0.to_owned(), x.1))
    }
    fn key(x: &(&'static str, u32)) -> String {
        x.0.to_owned()
    }

    fn sorted(m: &Mirror<u32>) -> Vec<u32> {
        let mut v: Vec<u32> = m.values().copied().collect();
        v.sort();
        v
    }

    #[test]
    fn a_relist_replaces_everything_at_once() {
        let mut m = Mirror::default();
        assert!(!m.apply(Event::Init, store, key));
        assert!(!m.apply(Event::InitApply(("a", 1)), store, key));
        assert!(!m.synced(), "not synced before InitDone");
        assert!(m.apply(Event::InitDone, store, key));
        assert!(m.apply(Event::Apply(("b", 2)), store, key));
        assert_eq!(sorted(&m), [1, 2]);
        // A relist after a 410: "a" was deleted while the watch was down.
        m.apply(Event::Init, store, key);
        m.apply(Event::InitApply(("b", 3)), store, key);
        assert_eq!(
            sorted(&m),
            [1, 2],
            "the old state stays until the relist is complete"
        );
        m.apply(Event::InitDone, store, key);
        assert_eq!(sorted(&m), [3]);
    }

    #[test]
    fn an_update_that_is_no_longer_kept_removes_the_object() {
        let mut m = Mirror::default();
        m.apply(Event::Init, store, key);
        m.apply(Event::InitDone, store, key);
        m.apply(Event::Apply(("a", 1)), store, key);
        m.apply(Event::Apply(("a", 0)), store, key);
        assert_eq!(m.len(), 0);
        assert!(
            !m.apply(Event::Delete(("a", 0)), store, key),
            "nothing left to delete"
        );
    }

    #[test]
    fn an_absent_kind_is_synced_and_empty() {
        let mut m: Mirror<u32> = Mirror::default();
        assert!(m.mark_absent());
        assert!(m.synced());
        assert!(!m.mark_absent());
    }
}
