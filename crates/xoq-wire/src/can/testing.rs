//! Helpers and proptest strategies shared by the tests of the `can` modules.

use bytes::Bytes;
use proptest::prelude::*;

use super::{CanFrame, EFF_MAX, Filter, MAX_FILTERS, SFF_MAX, TimedFrame, encode_timed};

pub(super) const FD_LENS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn enc(f: &TimedFrame) -> Vec<u8> {
    let mut b = Vec::new();
    encode_timed(f, &mut b);
    b
}

pub(super) fn timed(frame: CanFrame, timestamp_us: u64) -> TimedFrame {
    TimedFrame {
        frame,
        timestamp_us,
    }
}

/// Raw header bytes for the decoder tests.
pub(super) fn raw(flags: u8, id: u32, len: u8, data: &[u8]) -> Vec<u8> {
    let mut b = vec![flags];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&7u64.to_be_bytes());
    b.push(len);
    b.extend_from_slice(data);
    b
}

fn id_kind() -> impl Strategy<Value = (bool, u32)> {
    prop_oneof![(Just(false), 0..=SFF_MAX), (Just(true), 0..=EFF_MAX),]
}

fn classic_data() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=8).prop_map(Bytes::from)
}

fn fd_data() -> impl Strategy<Value = Bytes> {
    proptest::sample::select(FD_LENS.to_vec())
        .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
        .prop_map(Bytes::from)
}

pub(super) fn can_frame() -> impl Strategy<Value = CanFrame> {
    prop_oneof![
        (id_kind(), classic_data()).prop_map(|((extended, id), data)| CanFrame {
            id,
            extended,
            data,
            ..CanFrame::default()
        }),
        (id_kind(), 0u8..=8).prop_map(|((extended, id), rtr_len)| CanFrame {
            id,
            extended,
            rtr: true,
            rtr_len,
            ..CanFrame::default()
        }),
        (0..=EFF_MAX, classic_data()).prop_map(|(id, data)| CanFrame {
            id,
            error: true,
            data,
            ..CanFrame::default()
        }),
        (id_kind(), fd_data(), any::<bool>(), any::<bool>()).prop_map(
            |((extended, id), data, brs, esi)| CanFrame {
                id,
                extended,
                fd: true,
                brs,
                esi,
                data,
                ..CanFrame::default()
            }
        ),
    ]
}

pub(super) fn timed_frame() -> impl Strategy<Value = TimedFrame> {
    (can_frame(), any::<u64>()).prop_map(|(frame, timestamp_us)| TimedFrame {
        frame,
        timestamp_us,
    })
}

pub(crate) fn batch() -> impl Strategy<Value = Vec<TimedFrame>> {
    proptest::collection::vec(timed_frame(), 0..20)
}

pub(super) fn filter() -> impl Strategy<Value = Filter> {
    (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(id, mask, extended)| Filter {
        id,
        mask,
        extended,
    })
}

pub(super) fn filters() -> impl Strategy<Value = Vec<Filter>> {
    proptest::collection::vec(filter(), 0..=MAX_FILTERS)
}
