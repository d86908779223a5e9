//! Typed content ids. Every object is named by the BLAKE3 hash of its plain
//! bytes; the type says what kind of object the hash names, so a tree id can
//! never be passed where a chunk id is expected.

use std::fmt;

use crate::error::{Error, Result};

pub const ID_LEN: usize = 32;

macro_rules! typed_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("Id of a ", $what, ": the BLAKE3 hash of its plain bytes.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            pub const WHAT: &'static str = $what;

            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::malformed($what, format!("'{s}' is not a 64-digit hex id"))
                })?;
                Ok(Self(out))
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(ChunkId, "chunk");
typed_id!(TreeId, "tree");
typed_id!(SnapshotId, "snapshot");
typed_id!(PackId, "pack");

/// What a blob in a pack holds. Chunks and trees share the pack files and
/// the index, but never an id space in the API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Chunk = 1,
    Tree = 2,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(BlobKind::Chunk),
            2 => Ok(BlobKind::Tree),
            _ => Err(Error::malformed("blob", format!("unknown blob kind {v}"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Chunk => "chunk",
            BlobKind::Tree => "tree",
        }
    }
}

/// A blob id with its kind, as the pack and index layer sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlobId {
    pub kind: BlobKind,
    pub hash: [u8; ID_LEN],
}

impl BlobId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

impl From<ChunkId> for BlobId {
    fn from(id: ChunkId) -> Self {
        BlobId {
            kind: BlobKind::Chunk,
            hash: id.0,
        }
    }
}

impl From<TreeId> for BlobId {
    fn from(id: TreeId) -> Self {
        BlobId {
            kind: BlobKind::Tree,
            hash: id.0,
        }
    }
}
