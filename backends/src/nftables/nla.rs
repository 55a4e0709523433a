//! Netlink framing by hand: message headers, attributes (TLVs) and their parsing.
//!
//! libnftnl builds what maint *sends* to nf_tables, but reading back (100,000 set elements, rule
//! expressions to compare) and all of ctnetlink are plain TLV walks. Doing those here keeps them
//! allocation-free and avoids a C object per element; nothing in this module knows what an
//! attribute means.

/// Netlink header length, and the alignment of messages and attributes.
pub const NLMSG_HDRLEN: usize = 16;
const ALIGN: usize = 4;

/// Strips the "nested" and "network byte order" flag bits from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

pub fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// One netlink message inside a receive buffer or a built batch.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the netlink header (for netfilter: the nfgenmsg, then attributes).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The attributes of a netfilter message (after its 4-byte nfgenmsg).
    pub fn nf_attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload.get(4..).unwrap_or(&[]))
    }
}

/// Iterates over the messages in `buf`; stops at the first truncated one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let msg = Message {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().ok()?),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align(len).min(rest.len())..];
        Some(msg)
    })
}

/// Iterator over the attributes in a buffer: `(type, payload)`, flag bits stripped.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Attrs { rest: buf }
    }

    /// The payload of the first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.clone().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    pub fn nested(&self, ty: u16) -> Option<Attrs<'a>> {
        self.get(ty).map(Attrs::new)
    }

    pub fn be32(&self, ty: u16) -> Option<u32> {
        self.get(ty).and_then(be32)
    }

    pub fn be16(&self, ty: u16) -> Option<u16> {
        self.get(ty)
            .and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)))
    }

    pub fn u8(&self, ty: u16) -> Option<u8> {
        self.get(ty).and_then(|v| v.first().copied())
    }

    /// A NUL-terminated string attribute.
    pub fn str(&self, ty: u16) -> Option<&'a str> {
        self.get(ty).and_then(cstr)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let value = &self.rest[4..len];
        self.rest = &self.rest[align(len).min(self.rest.len())..];
        Some((ty, value))
    }
}

pub fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn cstr(v: &[u8]) -> Option<&str> {
    let v = v.split(|b| *b == 0).next()?;
    std::str::from_utf8(v).ok()
}

/// Builds netlink messages into one growing buffer, several messages back to back.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    msg_start: usize,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    /// Starts a netfilter message: netlink header, then nfgenmsg (family, version 0, res_id).
    pub fn begin_nf(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Finishes the message started last.
    pub fn end(&mut self) {
        let len = (self.buf.len() - self.msg_start) as u32;
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn put(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) {
        self.put(ty, &[v]);
    }

    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    /// Opens a nested attribute; close it with [`Writer::nest_end`].
    pub fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_messages_parse_back() {
        let mut w = Writer::new();
        w.begin_nf(0x0a01, 5, 7, 1, 10);
        w.put_str(1, "maint");
        let n = w.nest_start(4);
        w.put_be32(1, 0x01020304);
        w.put_u8(2, 9);
        w.nest_end(n);
        w.end();
        w.begin_nf(0x0a02, 0, 8, 2, 0);
        w.end();

        let msgs: Vec<_> = messages(&w.buf).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].ty, msgs[0].flags, msgs[0].seq), (0x0a01, 5, 7));
        assert_eq!(msgs[0].payload[0], 1);
        let attrs = msgs[0].nf_attrs();
        assert_eq!(attrs.str(1), Some("maint"));
        let nest = attrs.nested(4).unwrap();
        assert_eq!(nest.be32(1), Some(0x01020304));
        assert_eq!(nest.u8(2), Some(9));
        assert_eq!(msgs[1].seq, 8);
        assert_eq!(msgs[1].nf_attrs().count(), 0);
    }

    #[test]
    fn truncated_input_stops_cleanly() {
        let mut w = Writer::new();
        w.begin_nf(1, 0, 1, 0, 0);
        w.put(1, &[1, 2, 3, 4, 5]);
        w.end();
        let cut = &w.buf[..w.buf.len() - 3];
        assert_eq!(messages(cut).count(), 0);
        let attrs = Attrs::new(&[8, 0, 1, 0, 1, 2]);
        assert_eq!(attrs.count(), 0);
    }
}
