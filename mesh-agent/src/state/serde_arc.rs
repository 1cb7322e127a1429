//! Serde for `Vec<Arc<T>>` without serde's `rc` feature.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeSeq};

pub fn serialize<T: Serialize, S: Serializer>(v: &[Arc<T>], ser: S) -> Result<S::Ok, S::Error> {
    let mut seq = ser.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&**x)?;
    }
    seq.end()
}

pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
) -> Result<Vec<Arc<T>>, D::Error> {
    Ok(Vec::<T>::deserialize(de)?
        .into_iter()
        .map(Arc::new)
        .collect())
}
