//! How a job's payload is stored by a durable store: as bytes.

use bytes::Bytes;

use crate::handler::BoxError;

/// A payload that a durable store can keep: turned into bytes on enqueue
/// and back when a worker claims it, perhaps in another process.
///
/// Implemented for `Vec<u8>`, [`Bytes`] and `String`. For your own types,
/// write the two functions with the encoding you already use (serde_json,
/// bincode, protobuf…); keep old encodings readable, as jobs outlive
/// deploys.
pub trait Payload: Sized {
    /// The payload as bytes.
    fn to_bytes(&self) -> Vec<u8>;

    /// The payload back from its bytes.
    ///
    /// # Errors
    ///
    /// The bytes are not a payload of this type. The job then ends
    /// [`Failed`](crate::Outcome::Failed) without running; its row stays in
    /// the store with the error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, BoxError>;
}

impl Payload for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, BoxError> {
        Ok(bytes.to_vec())
    }
}

impl Payload for Bytes {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, BoxError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl Payload for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, BoxError> {
        Ok(String::from_utf8(bytes.to_vec())?)
    }
}
