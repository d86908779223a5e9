//! Little-endian fixed-width encoding for the on-disk and wire formats.
//! Decoding never trusts a length: every read is checked against what is
//! left and against the caller's bound, so damaged or hostile bytes give an
//! error, never a panic or a huge allocation.

use crate::error::{Error, Result};
use crate::id::ID_LEN;

#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn id(&mut self, v: &[u8; ID_LEN]) {
        self.buf.extend_from_slice(v);
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Bytes with a u32 length prefix.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Decoder { data, pos: 0, what }
    }

    pub fn err(&self, detail: impl Into<String>) -> Error {
        Error::malformed(
            self.what,
            format!("{} (at byte {})", detail.into(), self.pos),
        )
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.err(format!("truncated: wanted {n} more bytes")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    pub fn id(&mut self) -> Result<[u8; ID_LEN]> {
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(self.take(ID_LEN)?);
        Ok(out)
    }
    /// Length-prefixed bytes, refusing a length above `max`.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err(format!("field of {n} bytes exceeds the limit of {max}")));
        }
        self.take(n)
    }
    /// A count of items each at least `min_item` bytes long, checked against
    /// what is left so that a forged count cannot trigger a huge allocation.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(self.err(format!("count {n} exceeds the remaining data")));
        }
        Ok(n)
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn expect_end(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}
