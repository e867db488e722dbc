//! Deserialising "open" JSON objects: typed known fields plus an `extra` map
//! of everything else, so a pass-through forwards what tollgate does not
//! model. serde's `#[serde(flatten)]` does this by buffering the whole object
//! into an intermediate tree first, which doubles the work of parsing every
//! request (and blurs error positions); `open_object!` reads each field once.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `open_object!(Type, "what it is", required { field: T, .. }, optional { field: T, json_name = field: T, .. })`
/// implements `Deserialize` for `Type`, whose struct has the required fields
/// as `T`, the optional ones as `Option<T>`, and `extra: serde_json::Map`.
macro_rules! open_object {
    (
        $ty:ident, $what:literal,
        required { $($req:ident $(as $req_json:literal)? : $req_ty:ty),* $(,)? },
        optional { $($opt:ident : $opt_ty:ty),* $(,)? }
    ) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $req: Option<$req_ty> = None;)*
                        $(let mut $opt: Option<$opt_ty> = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some(key) = map.next_key::<$crate::api::open_object::Key<'de>>()? {
                            let key = key.0;
                            $(if key == open_object!(@name $req $(, $req_json)?) {
                                $req = Some(map.next_value()?);
                                continue;
                            })*
                            $(if key == stringify!($opt) {
                                $opt = map.next_value()?;
                                continue;
                            })*
                            extra.insert(key.into_owned(), map.next_value()?);
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| serde::de::Error::missing_field(open_object!(@name $req $(, $req_json)?)))?,)*
                            $($opt,)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(ObjectVisitor)
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident, $json:literal) => { $json };
}

pub(crate) use open_object;
