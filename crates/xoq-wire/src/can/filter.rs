//! Acceptance filters: matching, and their encoding in the P2P messages.

use bytes::{Buf, BufMut};

use super::frame::{CanFrame, invalid};
use crate::coding::{DecodeError, get_bool, get_u32, get_varint, put_varint, varint_len};

/// Most filters in one [`ClientMsg::Hello`](super::ClientMsg::Hello) or
/// [`ClientMsg::SetFilters`](super::ClientMsg::SetFilters).
pub const MAX_FILTERS: usize = 64;
const FILTER_LEN: usize = 9;

/// An acceptance filter, with python-can's semantics: a frame matches when
/// `(frame.id & mask) == (id & mask)`; if `extended` is set, only extended frames match, and
/// if it is clear the filter does not look at the id kind (python-can's filter without an
/// `extended` key). Error frames are compared like other frames, their id being the error
/// class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Id bits to compare.
    pub id: u32,
    /// Which id bits count.
    pub mask: u32,
    /// Match extended frames only.
    pub extended: bool,
}

impl Filter {
    /// Whether `frame` passes this filter.
    pub fn matches(&self, frame: &CanFrame) -> bool {
        if self.extended && !frame.extended {
            return false;
        }
        (frame.id & self.mask) == (self.id & self.mask)
    }
}

/// Whether `frame` passes a filter set: no filters accept everything (as python-can's
/// `set_filters(None)`), otherwise any one match suffices.
pub fn filters_accept(filters: &[Filter], frame: &CanFrame) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(frame))
}

pub(super) fn filters_len(filters: &[Filter]) -> usize {
    varint_len(filters.len() as u64) + filters.len() * FILTER_LEN
}

pub(super) fn put_filters(buf: &mut impl BufMut, filters: &[Filter]) {
    put_varint(buf, filters.len() as u64);
    for f in filters {
        buf.put_u32(f.id);
        buf.put_u32(f.mask);
        buf.put_u8(u8::from(f.extended));
    }
}

pub(super) fn get_filters(p: &mut impl Buf) -> Result<Vec<Filter>, DecodeError> {
    let count = get_varint(p)?;
    if count > MAX_FILTERS as u64 {
        return Err(invalid("filters", "more than 64 filters"));
    }
    let count = count as usize;
    if p.remaining() < count * FILTER_LEN {
        return Err(DecodeError::Short);
    }
    let mut filters = Vec::with_capacity(count);
    for _ in 0..count {
        filters.push(Filter {
            id: get_u32(p)?,
            mask: get_u32(p)?,
            extended: get_bool(p, "filter.extended")?,
        });
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn filters_match() {
        let std_frame = CanFrame::new(0x123, Bytes::new()).expect("valid frame");
        let ext_frame = CanFrame {
            id: 0x123,
            extended: true,
            ..CanFrame::default()
        };
        let exact = Filter {
            id: 0x123,
            mask: 0x7FF,
            extended: false,
        };
        assert!(exact.matches(&std_frame));
        assert!(
            exact.matches(&ext_frame),
            "extended: false does not look at the kind"
        );
        assert!(!exact.matches(&CanFrame::new(0x124, Bytes::new()).expect("valid frame")));
        let range = Filter {
            id: 0x120,
            mask: 0x7F0,
            extended: false,
        };
        assert!(range.matches(&CanFrame::new(0x12F, Bytes::new()).expect("valid frame")));
        assert!(!range.matches(&CanFrame::new(0x130, Bytes::new()).expect("valid frame")));
        let ext_only = Filter {
            extended: true,
            ..exact
        };
        assert!(!ext_only.matches(&std_frame));
        assert!(ext_only.matches(&ext_frame));
        // Mask bits are applied to both sides: bits outside the mask never matter.
        let masked = Filter {
            id: 0xFFFF_F123,
            mask: 0xFF,
            extended: false,
        };
        assert!(masked.matches(&CanFrame::new(0x523, Bytes::new()).expect("valid frame")));
        assert!(filters_accept(&[], &std_frame));
        assert!(filters_accept(&[range, exact], &std_frame));
        let other = Filter { id: 0x200, ..exact };
        assert!(!filters_accept(&[other, ext_only], &std_frame));
    }
}
