//! Sound: interleaved `f32` samples to and from the payloads audio packets carry (Opus, or
//! PCM s16/f32). One encoder per sending direction, one decoder per receiving one.
//!
//! Opus runs in its restricted low-delay mode (CELT only): 2.5 ms of lookahead instead of
//! 6.5 ms, which a remote speaker loop feels, at no cost for the speech and tones robots
//! carry. The decoder trims that lookahead from its first output, so decoded sample `i` is
//! source sample `i` and the packets' sample counters stay meaningful after decoding.

use crate::MediaError;

/// Payload codec, as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundCodec {
    /// Opus.
    Opus,
    /// s16 little-endian PCM.
    PcmS16,
    /// f32 little-endian PCM.
    PcmF32,
}

impl From<xoq_wire::audio::AudioCodec> for SoundCodec {
    fn from(c: xoq_wire::audio::AudioCodec) -> Self {
        use xoq_wire::audio::AudioCodec;
        match c {
            AudioCodec::Opus => SoundCodec::Opus,
            AudioCodec::PcmS16 => SoundCodec::PcmS16,
            AudioCodec::PcmF32 => SoundCodec::PcmF32,
        }
    }
}

/// Most bytes one Opus packet may take (RFC 6716's largest packet is 1275 bytes per frame;
/// a 60 ms packet holds up to three 20 ms frames).
const MAX_OPUS_PACKET: usize = 4000;
/// Opus bit rate per channel: transparent for speech and tones, small next to any link.
const OPUS_BITRATE_PER_CHANNEL: i32 = 64_000;

fn opus_err(what: &str, code: i32) -> MediaError {
    MediaError::Undecodable {
        codec: "opus",
        reason: format!("{what}: libopus error {code}"),
    }
}

/// Encodes fixed-size frames of interleaved `f32` samples.
pub struct SoundEncoder {
    codec: SoundCodec,
    channels: usize,
    frame_samples: usize,
    opus: Option<OpusEnc>,
}

struct OpusEnc(*mut unsafe_libopus::OpusEncoder);

// The encoder state is plain memory owned by this value; libopus keeps no thread affinity.
unsafe impl Send for OpusEnc {}
// Only `&mut` reaches the state (encode takes `&mut self`): a shared reference can do nothing.
unsafe impl Sync for OpusEnc {}

impl Drop for OpusEnc {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create and destroyed once, here.
        unsafe { unsafe_libopus::opus_encoder_destroy(self.0) }
    }
}

impl SoundEncoder {
    /// An encoder for `frame_samples` samples per channel at `rate` Hz.
    pub fn new(
        codec: SoundCodec,
        rate: u32,
        channels: u8,
        frame_samples: usize,
    ) -> Result<Self, MediaError> {
        let opus = match codec {
            SoundCodec::Opus => {
                let mut err = 0i32;
                // SAFETY: plain constructor; the result is checked before use.
                let st = unsafe {
                    unsafe_libopus::opus_encoder_create(
                        rate as i32,
                        i32::from(channels),
                        unsafe_libopus::OPUS_APPLICATION_RESTRICTED_LOWDELAY,
                        &mut err,
                    )
                };
                if st.is_null() || err != unsafe_libopus::OPUS_OK {
                    return Err(opus_err("cannot create the encoder", err));
                }
                let enc = OpusEnc(st);
                // SAFETY: a valid encoder and a request that takes one i32.
                let r = unsafe {
                    unsafe_libopus::opus_encoder_ctl!(
                        enc.0,
                        unsafe_libopus::OPUS_SET_BITRATE_REQUEST,
                        OPUS_BITRATE_PER_CHANNEL * i32::from(channels)
                    )
                };
                if r != unsafe_libopus::OPUS_OK {
                    return Err(opus_err("cannot set the bit rate", r));
                }
                Some(enc)
            }
            _ => None,
        };
        Ok(Self {
            codec,
            channels: usize::from(channels),
            frame_samples,
            opus,
        })
    }

    /// Encode one frame: exactly `frame_samples × channels` interleaved samples in [-1, 1].
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, MediaError> {
        if pcm.len() != self.frame_samples * self.channels {
            return Err(MediaError::Undecodable {
                codec: "pcm",
                reason: format!(
                    "a frame is {} samples, got {}",
                    self.frame_samples * self.channels,
                    pcm.len()
                ),
            });
        }
        match (self.codec, &self.opus) {
            (SoundCodec::Opus, Some(enc)) => {
                let mut out = vec![0u8; MAX_OPUS_PACKET];
                // SAFETY: `pcm` holds frame_samples × channels samples (checked above) and
                // `out` has the length passed.
                let n = unsafe {
                    unsafe_libopus::opus_encode_float(
                        enc.0,
                        pcm.as_ptr(),
                        self.frame_samples as i32,
                        out.as_mut_ptr(),
                        out.len() as i32,
                    )
                };
                if n < 0 {
                    return Err(opus_err("encode failed", n));
                }
                out.truncate(n as usize);
                Ok(out)
            }
            (SoundCodec::PcmS16, _) => Ok(pcm
                .iter()
                .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
                .collect()),
            _ => Ok(pcm.iter().flat_map(|s| s.to_le_bytes()).collect()),
        }
    }
}

/// Decodes payloads back to interleaved `f32` samples; total on any bytes.
pub struct SoundDecoder {
    codec: SoundCodec,
    rate: usize,
    channels: usize,
    frame_samples: usize,
    opus: Option<OpusDec>,
    /// Samples per channel still to drop from the front of the output (Opus lookahead).
    trim: usize,
    /// First sample index the next packet should carry (packets follow each other).
    expect: Option<u64>,
    /// Stream index of the next decoded sample.
    next_out: Option<u64>,
}

/// Samples decoded from one packet, placed in the sender's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Stream index of the first sample (per channel).
    pub first_sample: u64,
    /// Interleaved samples.
    pub samples: Vec<f32>,
    /// Samples per channel the sender skipped before this packet (0 when it follows on).
    pub skipped: u64,
}

struct OpusDec(*mut unsafe_libopus::OpusDecoder);

// As for the encoder: plain owned memory, reached only through `&mut`.
unsafe impl Send for OpusDec {}
unsafe impl Sync for OpusDec {}

impl Drop for OpusDec {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create and destroyed once, here.
        unsafe { unsafe_libopus::opus_decoder_destroy(self.0) }
    }
}

impl SoundDecoder {
    /// A decoder for the matching [`SoundEncoder`].
    pub fn new(
        codec: SoundCodec,
        rate: u32,
        channels: u8,
        frame_samples: usize,
    ) -> Result<Self, MediaError> {
        let (opus, trim) = match codec {
            SoundCodec::Opus => {
                let mut err = 0i32;
                // SAFETY: plain constructor; the result is checked before use.
                let st = unsafe {
                    unsafe_libopus::opus_decoder_create(rate as i32, i32::from(channels), &mut err)
                };
                if st.is_null() || err != unsafe_libopus::OPUS_OK {
                    return Err(opus_err("cannot create the decoder", err));
                }
                // Restricted low-delay lookahead: 2.5 ms.
                (Some(OpusDec(st)), rate as usize / 400)
            }
            _ => (None, 0),
        };
        Ok(Self {
            codec,
            rate: rate as usize,
            channels: usize::from(channels),
            frame_samples,
            opus,
            trim,
            expect: None,
            next_out: None,
        })
    }

    /// Decode the packet whose first sample is `first_sample` in the sender's stream, and
    /// place its output in that stream. Opus output lags its input by the codec delay, which
    /// is trimmed at the start, so the decoded samples run on contiguously; after a skip in
    /// the packets the placement is exact to within that delay (2.5 ms).
    pub fn decode_packet(
        &mut self,
        first_sample: u64,
        payload: &[u8],
    ) -> Result<Decoded, MediaError> {
        let follows = self.expect == Some(first_sample);
        let skipped = match self.expect {
            Some(e) if first_sample > e => first_sample - e,
            _ => 0,
        };
        self.expect = Some(first_sample + self.frame_samples as u64);
        if !follows {
            // A new position: the output of this packet starts one codec delay before its
            // input, except at the very start, where that delay is trimmed.
            let lag = if self.trim > 0 {
                0
            } else {
                self.delay() as u64
            };
            self.next_out = Some(first_sample.saturating_sub(lag));
        }
        let samples = match self.decode(payload) {
            Ok(s) => s,
            Err(e) => {
                self.expect = None;
                return Err(e);
            }
        };
        let first = self.next_out.unwrap_or(first_sample);
        self.next_out = Some(first + (samples.len() / self.channels) as u64);
        Ok(Decoded {
            first_sample: first,
            samples,
            skipped,
        })
    }

    /// Decode one payload. A damaged payload is an error and leaves the decoder usable.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<f32>, MediaError> {
        let pcm_err = |reason: &str| MediaError::Undecodable {
            codec: "pcm",
            reason: reason.into(),
        };
        match self.codec {
            SoundCodec::Opus => {
                let Some(dec) = &self.opus else {
                    return Err(opus_err("no decoder", unsafe_libopus::OPUS_INVALID_STATE));
                };
                if payload.is_empty() || payload.len() > MAX_OPUS_PACKET {
                    return Err(opus_err(
                        "empty or oversized packet",
                        unsafe_libopus::OPUS_INVALID_PACKET,
                    ));
                }
                // Room for the longest packet Opus allows (120 ms), so no valid packet is
                // refused for size; the result is cut to what was decoded.
                let max = self.frame_samples.max(self.rate * 120 / 1000);
                let mut out = vec![0f32; max * self.channels];
                // SAFETY: `payload` is a valid slice of the length passed; `out` holds
                // `max` samples per channel.
                let n = unsafe {
                    unsafe_libopus::opus_decode_float(
                        dec.0,
                        payload.as_ptr(),
                        payload.len() as i32,
                        out.as_mut_ptr(),
                        max as i32,
                        0,
                    )
                };
                if n < 0 {
                    return Err(opus_err("undecodable packet", n));
                }
                out.truncate(n as usize * self.channels);
                let cut = self.trim.min(n as usize);
                self.trim -= cut;
                out.drain(..cut * self.channels);
                Ok(out)
            }
            SoundCodec::PcmS16 => {
                if !payload.len().is_multiple_of(2 * self.channels) {
                    return Err(pcm_err("s16 PCM that is not whole samples"));
                }
                Ok(payload
                    .chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32767.0)
                    .collect())
            }
            SoundCodec::PcmF32 => {
                if !payload.len().is_multiple_of(4 * self.channels) {
                    return Err(pcm_err("f32 PCM that is not whole samples"));
                }
                let v: Vec<f32> = payload
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if v.iter().any(|s| !s.is_finite()) {
                    return Err(pcm_err("f32 PCM sample that is not finite"));
                }
                Ok(v)
            }
        }
    }

    /// Samples per channel the codec holds back at the start (dropped from the first
    /// outputs): the receiver's sample counter starts this much later.
    pub fn delay(&self) -> usize {
        match self.codec {
            SoundCodec::Opus => self.rate / 400,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tone(rate: u32, hz: f32, from: usize, n: usize) -> Vec<f32> {
        (from..from + n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn opus_keeps_a_tone_and_its_sample_alignment() {
        let (rate, fs) = (48_000u32, 960usize);
        let mut enc = SoundEncoder::new(SoundCodec::Opus, rate, 1, fs).expect("encoder");
        let mut dec = SoundDecoder::new(SoundCodec::Opus, rate, 1, fs).expect("decoder");
        let mut out = Vec::new();
        for k in 0..20 {
            let p = enc.encode(&tone(rate, 440.0, k * fs, fs)).expect("encode");
            assert!(
                p.len() < 400,
                "64 kbit/s is 160 B per 20 ms, got {}",
                p.len()
            );
            out.extend(dec.decode(&p).expect("decode"));
        }
        assert_eq!(out.len(), 20 * fs - dec.delay());
        // After the codec settles, decoded sample i is source sample i.
        let want = tone(rate, 440.0, 0, out.len());
        let err: f32 = out[fs * 5..]
            .iter()
            .zip(&want[fs * 5..])
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / (out.len() - fs * 5) as f32;
        assert!(
            err < 1e-3,
            "mean square error {err}: the decoded tone is shifted or damaged"
        );
    }

    #[test]
    fn decoded_packets_are_placed_in_the_stream() {
        let (rate, fs) = (48_000u32, 960usize);
        let mut enc = SoundEncoder::new(SoundCodec::Opus, rate, 1, fs).expect("encoder");
        let mut dec = SoundDecoder::new(SoundCodec::Opus, rate, 1, fs).expect("decoder");
        let base = 96_000u64;
        let mut next = base;
        for k in 0..6u64 {
            // Packet 4 is skipped by the sender.
            let first = base + k * fs as u64;
            let p = enc
                .encode(&tone(rate, 440.0, first as usize, fs))
                .expect("encode");
            if k == 4 {
                continue;
            }
            let d = dec.decode_packet(first, &p).expect("decode");
            if k == 5 {
                assert_eq!(d.skipped, fs as u64);
                assert_eq!(d.first_sample, first - dec.delay() as u64);
            } else {
                assert_eq!((d.first_sample, d.skipped), (next, 0));
            }
            next = d.first_sample + d.samples.len() as u64;
        }
    }

    #[test]
    fn pcm_is_exact() {
        let s = tone(16_000, 300.0, 0, 160);
        for c in [SoundCodec::PcmF32, SoundCodec::PcmS16] {
            let mut enc = SoundEncoder::new(c, 16_000, 1, 160).expect("enc");
            let mut dec = SoundDecoder::new(c, 16_000, 1, 160).expect("dec");
            let back = dec.decode(&enc.encode(&s).expect("e")).expect("d");
            for (a, b) in s.iter().zip(&back) {
                assert!((a - b).abs() <= 1.0 / 32767.0, "{c:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_frame_of_the_wrong_size_is_refused() {
        let mut enc = SoundEncoder::new(SoundCodec::Opus, 48_000, 1, 960).expect("enc");
        assert!(enc.encode(&[0.0; 100]).is_err());
    }

    proptest! {
        /// Any bytes: samples or an error, never a panic; the decoder stays usable.
        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..1500), ch in 1u8..=2) {
            for c in [SoundCodec::Opus, SoundCodec::PcmS16, SoundCodec::PcmF32] {
                let mut dec = SoundDecoder::new(c, 48_000, ch, 960).expect("dec");
                if let Ok(v) = dec.decode(&bytes) {
                    prop_assert!(v.len() <= 48_000 * 120 / 1000 * usize::from(ch));
                    prop_assert!(v.iter().all(|s| s.is_finite()));
                }
            }
        }
    }
}

/// Counters of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Samples per channel played from received audio.
    pub played: u64,
    /// Samples per channel that arrived after their place had been played (dropped).
    pub late: u64,
    /// Samples per channel never received (a gap in the counter), filled with silence.
    pub lost: u64,
    /// Samples per channel of silence played because the buffer ran dry while playing.
    pub concealed: u64,
    /// Times the buffer ran dry while playing (it refills to its target before going on).
    pub underruns: u64,
    /// Samples per channel dropped because the buffer was over its bound, or more than twice
    /// its target deep when playing (a burst after a stall): the oldest go, so the delay
    /// returns to the target.
    pub overruns: u64,
}

/// Orders received samples by their stream index and plays them at a steady depth: it
/// starts playing once `target` samples per channel are buffered, fills gaps with silence
/// (counted as lost), drops what arrives too late, and is bounded at `max` (drop-oldest,
/// counted). Sans-IO: the caller pushes what arrives and pulls what the speaker needs.
#[derive(Debug)]
pub struct JitterBuffer {
    channels: usize,
    target: usize,
    max: usize,
    /// Index of the next sample to play, once known.
    next: Option<u64>,
    /// Buffered samples from `next` on (interleaved); `None` marks a missing frame.
    buf: std::collections::VecDeque<Option<f32>>,
    playing: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer that plays after `target` and holds at most `max` samples per channel.
    pub fn new(channels: u8, target: usize, max: usize) -> Self {
        Self {
            channels: usize::from(channels.max(1)),
            target,
            max: max.max(target),
            next: None,
            buf: std::collections::VecDeque::new(),
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Samples per channel buffered (received or known missing) ahead of the play point.
    pub fn depth(&self) -> usize {
        self.buf.len() / self.channels
    }

    /// Stream index of the next sample [`pull`](Self::pull) plays, once a stream started.
    pub fn next_index(&self) -> Option<u64> {
        self.next
    }

    /// Forget the stream (a new talker): the next push starts a new one.
    pub fn reset(&mut self) {
        self.next = None;
        self.buf.clear();
        self.playing = false;
    }

    /// Add interleaved samples whose first sample has index `first`.
    pub fn push(&mut self, first: u64, samples: &[f32]) {
        let ch = self.channels as u64;
        let frames = samples.len() as u64 / ch;
        let next = *self.next.get_or_insert(first);
        let (mut first, mut samples) = (first, samples);
        if first < next {
            let skip = (next - first).min(frames);
            self.stats.late += skip;
            first += skip;
            samples = &samples[(skip * ch) as usize..];
            if samples.is_empty() {
                return;
            }
        }
        let offset = ((first - next) * ch) as usize;
        // A jump far past the bound is a new stream position: restart there rather than
        // buffer seconds of silence.
        if offset / self.channels > self.max {
            self.stats.lost += (first - next).saturating_sub(self.depth() as u64);
            self.buf.clear();
            self.next = Some(first);
            self.playing = false;
            return self.push(first, samples);
        }
        if self.buf.len() < offset + samples.len() {
            self.buf.resize(offset + samples.len(), None);
        }
        for (i, s) in samples.iter().enumerate() {
            self.buf[offset + i] = Some(*s);
        }
        while self.buf.len() / self.channels > self.max {
            for _ in 0..self.channels {
                self.buf.pop_front();
            }
            self.stats.overruns += 1;
            self.next = self.next.map(|n| n + 1);
        }
    }

    /// The next `frames` samples per channel for the speaker, or `None` while the buffer is
    /// filling up to its target (the speaker plays nothing from this stream then).
    pub fn pull(&mut self, frames: usize) -> Option<Vec<f32>> {
        if !self.playing {
            if self.depth() < self.target.max(frames) {
                return None;
            }
            self.playing = true;
        }
        // Far behind (a burst after a stall): drop the oldest down to the target, so the
        // delay returns to it instead of staying at what the stall added. Latency over
        // fidelity: a remote speaker that lags its talker is worse than a skip.
        if self.depth() > 2 * self.target.max(frames) {
            let drop = self.depth() - self.target.max(frames);
            self.buf.drain(..drop * self.channels);
            self.stats.overruns += drop as u64;
            self.next = self.next.map(|n| n + drop as u64);
        }
        let mut out = Vec::with_capacity(frames * self.channels);
        let mut dry = false;
        for _ in 0..frames {
            if self.buf.len() < self.channels {
                dry = true;
                // Inserted silence stretches time: the stream's index does not advance, so
                // what arrives next still has its place.
                out.extend(std::iter::repeat_n(0.0, self.channels));
                self.stats.concealed += 1;
                continue;
            } else {
                let frame: Vec<Option<f32>> = self.buf.drain(..self.channels).collect();
                if frame[0].is_some() {
                    self.stats.played += 1;
                } else {
                    self.stats.lost += 1;
                }
                out.extend(frame.into_iter().map(|s| s.unwrap_or(0.0)));
            }
            self.next = self.next.map(|n| n + 1);
        }
        if dry {
            self.stats.underruns += 1;
            self.playing = false;
        }
        Some(out)
    }
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn plays_after_the_target_in_order() {
        let mut j = JitterBuffer::new(1, 20, 100);
        j.push(10, &[1.0; 10]);
        assert_eq!(j.pull(10), None, "under target");
        j.push(0, &[0.5; 10]);
        assert_eq!(
            j.stats().late,
            10,
            "index 0..10 is before the stream's first index 10"
        );
        j.push(20, &[2.0; 10]);
        let a = j.pull(10).expect("playing");
        assert_eq!(a, vec![1.0; 10]);
        assert_eq!(j.pull(10).expect("playing"), vec![2.0; 10]);
        assert_eq!(j.stats().played, 20);
    }

    #[test]
    fn a_gap_is_lost_and_a_dry_buffer_is_an_underrun() {
        let mut j = JitterBuffer::new(1, 10, 100);
        j.push(0, &[1.0; 10]);
        j.push(20, &[3.0; 10]);
        let out = j.pull(30).expect("playing");
        assert_eq!(&out[..10], &[1.0; 10]);
        assert_eq!(&out[10..20], &[0.0; 10]);
        assert_eq!(&out[20..], &[3.0; 10]);
        assert_eq!(j.stats().lost, 10);
        // Dry while playing: silence, counted, and the buffer refills before going on.
        assert_eq!(j.pull(5), Some(vec![0.0; 5]));
        assert_eq!((j.stats().concealed, j.stats().underruns), (5, 1));
        j.push(30, &[4.0; 5]);
        assert!(j.pull(10).is_none(), "5 is under the target of 10");
        j.push(35, &[4.0; 10]);
        let mut out = j.pull(10).expect("playing");
        out.extend(j.pull(10).expect("playing"));
        assert_eq!(&out[..15], &[4.0; 15], "nothing lost to the concealment");
        assert_eq!(&out[15..], &[0.0; 5]);
        assert_eq!(
            (j.stats().concealed, j.stats().underruns, j.stats().late),
            (10, 2, 0)
        );
    }

    #[test]
    fn a_burst_after_a_stall_is_cut_back_to_the_target() {
        let mut j = JitterBuffer::new(1, 10, 1000);
        j.push(0, &[1.0; 10]);
        assert!(j.pull(10).is_some());
        // A stall, then 100 samples at once.
        j.push(10, &(0..100).map(|i| i as f32).collect::<Vec<_>>());
        let out = j.pull(10).expect("playing");
        assert_eq!(out[0], 90.0, "the oldest 90 went, the newest 10 play");
        assert_eq!(j.stats().overruns, 90);
        assert_eq!(j.depth(), 0);
    }

    #[test]
    fn bounded_drop_oldest() {
        let mut j = JitterBuffer::new(2, 4, 8);
        j.push(0, &[1.0; 2 * 12]);
        assert_eq!(j.depth(), 8);
        assert_eq!(j.stats().overruns, 4);
    }

    proptest::proptest! {
        /// Any pushes and pulls: bounded, never a panic.
        #[test]
        fn total_and_bounded(ops in proptest::collection::vec((0u64..500, 0usize..64, 0usize..64), 0..60)) {
            let mut j = JitterBuffer::new(2, 16, 64);
            for (first, n, pull) in ops {
                j.push(first, &vec![0.25; n * 2]);
                proptest::prop_assert!(j.depth() <= 64);
                if let Some(v) = j.pull(pull) {
                    proptest::prop_assert_eq!(v.len(), pull * 2);
                }
            }
        }
    }
}
