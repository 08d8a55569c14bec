//! The machine service (P2P), sans-IO: what a deployed robot serves, so a client can find a
//! service by name (`<machine-id>/<service>`) instead of copying endpoint ids around.
//!
//! The client opens one bidirectional stream and sends [`DESCRIBE`]; the server answers with
//! one [`Machine`] and closes the stream:
//!
//! ```text
//! length varint | name string | count varint | count × Service
//! Service: name string | kind string | endpoint_id [32] | port u16 | moq_path string | device string
//! ```
//!
//! `port` is the UDP port the service listens on (0 = not fixed: dial by id through
//! discovery); a client that reached the machine at some IP dials the service at the same IP
//! and that port. At most [`MAX_SERVICES`] services and [`MAX_MESSAGE`] bytes.

use bytes::{Buf, BufMut};

use crate::coding::{
    DecodeError, finish_exact, get_string, get_u8, get_u16, get_varint, put_string, put_varint,
    string_len, varint_len,
};

/// ALPN of the machine service, version 1.
pub const ALPN_MACHINE: &[u8] = b"xoq/machine/1";
/// The one request: describe the machine.
pub const DESCRIBE: u8 = 0x01;
/// Most services one machine lists.
pub const MAX_SERVICES: usize = 256;
/// Largest answer accepted.
pub const MAX_MESSAGE: usize = 256 << 10;

/// One service of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Name clients use (`so101`, `can-can0`, `camera-front`).
    pub name: String,
    /// Service kind: `serial`, `can`, `camera`, `depth`, `audio`.
    pub kind: String,
    /// The service's endpoint id (public key).
    pub endpoint_id: [u8; 32],
    /// UDP port it listens on, 0 when not fixed.
    pub port: u16,
    /// Its MoQ path, empty when it does not publish on a relay.
    pub moq_path: String,
    /// The device it serves (a stable path such as `/dev/serial/by-id/...`).
    pub device: String,
}

/// What a machine serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Machine {
    /// Machine name (the host name).
    pub name: String,
    /// Its services.
    pub services: Vec<Service>,
}

impl Machine {
    fn body_len(&self) -> usize {
        string_len(&self.name)
            + varint_len(self.services.len() as u64)
            + self
                .services
                .iter()
                .map(|s| {
                    string_len(&s.name)
                        + string_len(&s.kind)
                        + 32
                        + 2
                        + string_len(&s.moq_path)
                        + string_len(&s.device)
                })
                .sum::<usize>()
    }

    /// Append the encoded answer. Too many services or bytes is the caller's bug: refused.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), DecodeError> {
        if self.services.len() > MAX_SERVICES {
            return Err(DecodeError::TooLong {
                len: self.services.len() as u64,
                max: MAX_SERVICES as u64,
            });
        }
        let len = self.body_len();
        if len > MAX_MESSAGE {
            return Err(DecodeError::TooLong {
                len: len as u64,
                max: MAX_MESSAGE as u64,
            });
        }
        put_varint(buf, len as u64);
        put_string(buf, &self.name);
        put_varint(buf, self.services.len() as u64);
        for s in &self.services {
            put_string(buf, &s.name);
            put_string(buf, &s.kind);
            buf.put_slice(&s.endpoint_id);
            buf.put_u16(s.port);
            put_string(buf, &s.moq_path);
            put_string(buf, &s.device);
        }
        Ok(())
    }

    /// Decode an answer from the front of `buf` (advancing past it). [`DecodeError::Short`]
    /// (nothing consumed): read more and call again.
    pub fn decode(buf: &mut &[u8]) -> Result<Machine, DecodeError> {
        let mut peek = *buf;
        let len = get_varint(&mut peek)?;
        if len > MAX_MESSAGE as u64 {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_MESSAGE as u64,
            });
        }
        let len = len as usize;
        if peek.remaining() < len {
            return Err(DecodeError::Short);
        }
        let mut body = &peek[..len];
        *buf = &peek[len..];
        let m = Self::decode_body(&mut body);
        finish_exact(body.remaining(), m)
    }

    fn decode_body(b: &mut &[u8]) -> Result<Machine, DecodeError> {
        let name = get_string(b, "name")?;
        let count = get_varint(b)?;
        if count > MAX_SERVICES as u64 {
            return Err(DecodeError::TooLong {
                len: count,
                max: MAX_SERVICES as u64,
            });
        }
        let mut services = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = get_string(b, "service name")?;
            let kind = get_string(b, "kind")?;
            if b.remaining() < 32 {
                return Err(DecodeError::Short);
            }
            let mut endpoint_id = [0u8; 32];
            b.copy_to_slice(&mut endpoint_id);
            let port = get_u16(b)?;
            let moq_path = get_string(b, "moq path")?;
            let device = get_string(b, "device")?;
            services.push(Service {
                name,
                kind,
                endpoint_id,
                port,
                moq_path,
                device,
            });
        }
        Ok(Machine { name, services })
    }
}

/// Check the request byte a client sent.
pub fn decode_request(buf: &mut &[u8]) -> Result<(), DecodeError> {
    match get_u8(buf)? {
        DESCRIBE => Ok(()),
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn machine() -> Machine {
        Machine {
            name: "robot-1".into(),
            services: vec![
                Service {
                    name: "so101".into(),
                    kind: "serial".into(),
                    endpoint_id: [7; 32],
                    port: 47101,
                    moq_path: "anon/0123456789abcdef/so101".into(),
                    device: "/dev/serial/by-id/usb-1a86_USB_Single_Serial-if00".into(),
                },
                Service {
                    name: "can-can0".into(),
                    kind: "can".into(),
                    endpoint_id: [9; 32],
                    port: 0,
                    moq_path: String::new(),
                    device: "can0".into(),
                },
            ],
        }
    }

    #[test]
    fn answers_round_trip_and_are_bounded() {
        let mut b = Vec::new();
        machine().encode(&mut b).expect("encode");
        b.extend_from_slice(b"next");
        let mut s = &b[..];
        assert_eq!(Machine::decode(&mut s), Ok(machine()));
        assert_eq!(s, b"next");
        for cut in 0..b.len() - 4 {
            assert_eq!(Machine::decode(&mut &b[..cut]), Err(DecodeError::Short));
        }
        let too_many = Machine {
            services: vec![Service::default(); MAX_SERVICES + 1],
            ..Machine::default()
        };
        assert!(too_many.encode(&mut Vec::new()).is_err());
        assert_eq!(decode_request(&mut &[DESCRIBE][..]), Ok(()));
        assert_eq!(
            decode_request(&mut &[9u8][..]),
            Err(DecodeError::UnknownKind(9))
        );
    }

    #[test]
    fn byte_snapshot() {
        let m = Machine {
            name: "r".into(),
            services: vec![Service {
                name: "a".into(),
                kind: "can".into(),
                endpoint_id: [1; 32],
                port: 0x0102,
                moq_path: String::new(),
                device: "c".into(),
            }],
        };
        let mut b = Vec::new();
        m.encode(&mut b).expect("encode");
        let mut want = vec![46, 1, b'r', 1, 1, b'a', 3, b'c', b'a', b'n'];
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[1, 2, 0, 1, b'c']);
        assert_eq!(b, want);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut s = &b[..];
            match Machine::decode(&mut s) {
                Ok(m) => prop_assert!(m.services.len() <= MAX_SERVICES),
                Err(DecodeError::Short) => prop_assert_eq!(s.len(), b.len()),
                Err(_) => {}
            }
        }
    }
}
