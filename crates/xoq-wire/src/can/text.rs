//! candump/cansend text syntax of a [`CanFrame`].

use std::fmt::Write as _;

use bytes::Bytes;

use super::frame::{CanFrame, EFF_MAX, FD_MAX_LEN, FrameError};

/// SocketCAN's CAN_ERR_FLAG: marks an error frame in candump's 8-digit id.
const CANDUMP_ERR_FLAG: u32 = 0x2000_0000;

impl CanFrame {
    /// candump/cansend text: `123#DEADBEEF`, `1ABCDEF0#` (extended ids have 8 digits),
    /// `123#R` / `123#R3` (remote, with requested length), `123##1DEADBEEF` (FD; the digit
    /// after `##` is BRS=1 | ESI=2), and error frames as `2000000C#...` (8 digits with
    /// SocketCAN's `CAN_ERR_FLAG` 0x20000000 set, as candump prints them). Hex is upper case.
    /// An invalid frame still prints, but may not parse back.
    pub fn to_candump(&self) -> String {
        let mut s = String::with_capacity(12 + 2 * self.data.len());
        // Writing to a String cannot fail.
        let _ = if self.error {
            write!(s, "{:08X}", self.id | CANDUMP_ERR_FLAG)
        } else if self.extended {
            write!(s, "{:08X}", self.id)
        } else {
            write!(s, "{:03X}", self.id)
        };
        if self.fd {
            let nibble = u8::from(self.brs) | (u8::from(self.esi) << 1);
            let _ = write!(s, "##{nibble:X}");
        } else if self.rtr {
            s.push_str("#R");
            if self.rtr_len != 0 {
                let _ = write!(s, "{}", self.rtr_len);
            }
        } else {
            s.push('#');
        }
        if !self.rtr {
            for b in self.data.iter() {
                let _ = write!(s, "{b:02X}");
            }
        }
        s
    }

    /// Parse cansend syntax (what [`to_candump`](Self::to_candump) prints): an id of exactly 3
    /// hex digits is standard, 8 digits extended (or an error frame if bit 0x20000000 is set);
    /// hex is case-insensitive; `.` is allowed between data bytes; the FD flags digit may also
    /// carry CANFD_FDF (4), which newer candump prints and which `##` already implies.
    /// Surrounding whitespace is ignored. The result is validated.
    pub fn from_candump(s: &str) -> Result<CanFrame, FrameError> {
        // Work on bytes: every valid character is ASCII, so no char-boundary slicing can panic.
        let s = s.trim().as_bytes();
        let hash = s
            .iter()
            .position(|&c| c == b'#')
            .ok_or(FrameError::Syntax("missing '#' after the id"))?;
        let (id_text, rest) = s.split_at(hash);
        let rest = &rest[1..];
        let raw = id_text.iter().try_fold(0u32, |acc, &c| {
            hex_val(c)
                .map(|v| (acc << 4) | u32::from(v))
                .ok_or(FrameError::Syntax("id must be hex digits"))
        })?;
        let mut f = CanFrame::default();
        match id_text.len() {
            3 => f.id = raw,
            8 if raw & !EFF_MAX == CANDUMP_ERR_FLAG => {
                f.error = true;
                f.id = raw & EFF_MAX;
            }
            8 if raw <= EFF_MAX => {
                f.extended = true;
                f.id = raw;
            }
            8 => {
                return Err(FrameError::Syntax(
                    "8-digit id has flag bits other than the error flag 0x20000000",
                ));
            }
            _ => {
                return Err(FrameError::Syntax(
                    "id must be 3 hex digits (standard) or 8 (extended)",
                ));
            }
        }
        let data = match rest {
            [b'#', nibble, data @ ..] => {
                let flags = hex_val(*nibble)
                    .filter(|v| v & 0x8 == 0)
                    .ok_or(FrameError::Syntax("FD flags digit must be 0-7"))?;
                f.fd = true;
                f.brs = flags & 1 != 0;
                f.esi = flags & 2 != 0;
                data
            }
            [b'#'] => return Err(FrameError::Syntax("missing FD flags digit after '##'")),
            [b'R' | b'r', len @ ..] => {
                f.rtr = true;
                f.rtr_len = match len {
                    [] => 0,
                    [d @ b'0'..=b'8'] => d - b'0',
                    _ => {
                        return Err(FrameError::Syntax(
                            "remote frame length must be one digit 0-8",
                        ));
                    }
                };
                &[]
            }
            data => data,
        };
        f.data = parse_hex_data(data)?;
        f.validate()?;
        Ok(f)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex byte pairs, with `.` allowed between (not inside) pairs, as cansend accepts.
fn parse_hex_data(s: &[u8]) -> Result<Bytes, FrameError> {
    let mut out = Vec::new();
    let mut it = s.iter().copied();
    while let Some(c) = it.next() {
        if c == b'.' {
            continue;
        }
        let hi = hex_val(c);
        let lo = it.next().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(FrameError::Syntax("data must be pairs of hex digits"));
        };
        // Stop early on absurd input instead of buffering it all before validation.
        if out.len() == FD_MAX_LEN {
            return Err(FrameError::Syntax("more than 64 data bytes"));
        }
        out.push((hi << 4) | lo);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn candump_exact_strings() {
        let cases = [
            (
                CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame"),
                "123#DEADBEEF",
            ),
            (
                CanFrame::new(0x1ABC_DEF0, Bytes::new()).expect("valid frame"),
                "1ABCDEF0#",
            ),
            (
                CanFrame::new(0x1234_5678, vec![0]).expect("valid frame"),
                "12345678#00",
            ),
            (
                CanFrame::new(0x5, Bytes::new()).expect("valid frame"),
                "005#",
            ),
            (CanFrame::remote(0x123, 0).expect("valid frame"), "123#R"),
            (CanFrame::remote(0x123, 3).expect("valid frame"), "123#R3"),
            (
                CanFrame::new_fd(0x123, &b"\xde\xad\xbe\xef"[..], true).expect("valid frame"),
                "123##1DEADBEEF",
            ),
            (
                CanFrame::new_fd(0x123, Bytes::new(), false).expect("valid frame"),
                "123##0",
            ),
            (
                CanFrame {
                    id: 0x4,
                    error: true,
                    data: Bytes::from_static(&[0, 4, 0, 0, 0, 0, 0, 0]),
                    ..CanFrame::default()
                },
                "20000004#0004000000000000",
            ),
        ];
        for (frame, text) in cases {
            assert_eq!(frame.to_candump(), text);
            assert_eq!(CanFrame::from_candump(text), Ok(frame));
        }
        let mut esi = CanFrame::new_fd(0x1, vec![1], false).expect("valid frame");
        esi.esi = true;
        assert_eq!(esi.to_candump(), "001##201");
    }

    #[test]
    fn candump_parse_variants() {
        let deadbeef = CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame");
        for text in [
            "123#DE.AD.BE.EF",
            "123#deadbeef",
            " 123#DEADBEEF\n",
            "123#.DEAD..BEEF.",
        ] {
            assert_eq!(
                CanFrame::from_candump(text).as_ref(),
                Ok(&deadbeef),
                "{text}"
            );
        }
        // 8 digits make an extended frame even for a small id.
        let f = CanFrame::from_candump("00000123#").expect("valid frame");
        assert!(f.extended && f.id == 0x123);
        // Newer candump prints CANFD_FDF (4) in the flags digit.
        assert_eq!(
            CanFrame::from_candump("123##5DEADBEEF"),
            CanFrame::from_candump("123##1DEADBEEF")
        );
        assert_eq!(CanFrame::from_candump("123#r2"), CanFrame::remote(0x123, 2));
    }

    #[test]
    fn candump_rejects() {
        let syntax = |t: &str| matches!(CanFrame::from_candump(t), Err(FrameError::Syntax(_)));
        for t in [
            "",
            "123",
            "12#00",
            "1234#00",
            "123456789#00",
            "12G#00",
            "123#0",
            "123#D.EAD",
            "123#XX",
            "123##",
            "123##8",
            "123##G00",
            "123#R9",
            "123#R12",
            "123#Rx",
            "E0000123#",
            "40000123#",
            "123#DEAD#BEEF",
        ] {
            assert!(syntax(t), "{t:?} should be a syntax error");
        }
        assert!(syntax(&format!("123##0{}", "00".repeat(65))));
        assert_eq!(
            CanFrame::from_candump("800#"),
            Err(FrameError::StandardIdTooLarge(0x800))
        );
        assert_eq!(
            CanFrame::from_candump("123#000000000000000000"),
            Err(FrameError::ClassicTooLong(9))
        );
        assert_eq!(
            CanFrame::from_candump("123##100000000000000000000000000"),
            Err(FrameError::InvalidFdLength(13))
        );
        // An error frame cannot be remote or FD.
        assert_eq!(
            CanFrame::from_candump("20000004#R"),
            Err(FrameError::ErrorFrameFlags)
        );
    }

    proptest! {
        #[test]
        fn candump_total(s in ".{0,64}") {
            let _ = CanFrame::from_candump(&s);
        }

        #[test]
        fn candump_total_near_syntax(s in "[0-9A-Fa-fRr#. ]{0,40}") {
            if let Ok(f) = CanFrame::from_candump(&s) {
                prop_assert_eq!(f.validate(), Ok(()));
                prop_assert_eq!(CanFrame::from_candump(&f.to_candump()), Ok(f));
            }
        }
    }
}
