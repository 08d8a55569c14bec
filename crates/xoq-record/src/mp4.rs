//! H.264 in MP4 (ISO BMFF), written directly: progressive files (what LeRobot datasets hold)
//! and fragmented MP4 / CMAF (what `xoq record --video-dir` writes while recording).
//!
//! Only what a camera stream needs: one video track, no B-frames (so decode order is
//! presentation order and no `ctts`/edit list is needed), sample times as durations in the
//! track's timescale. Access units arrive in Annex B (start codes); MP4 wants them
//! length-prefixed with the parameter sets in the `avcC` box, which [`AvcParams`] and
//! [`to_length_prefixed`] provide. The first sample of every file is a keyframe.

use std::io::{Seek, SeekFrom, Write};

/// NAL unit types that matter here.
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Mp4Error {
    /// Writing failed.
    #[error("cannot write the MP4 file: {0}")]
    Io(#[from] std::io::Error),
    /// The first sample must be a keyframe carrying SPS and PPS.
    #[error("the first sample is not a keyframe with SPS and PPS")]
    NoKeyframe,
    /// A sample's duration does not fit the file's 32-bit fields.
    #[error("sample {0}: duration out of range")]
    Duration(u64),
}

/// The non-empty NAL units of an Annex-B stream (start codes removed).
fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    xoq_media::h264::nal_units(stream).filter(|n| !n.is_empty())
}

/// The parameter sets of a stream, taken from its first keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcParams {
    /// Sequence parameter set (NAL unit, header byte included).
    pub sps: Vec<u8>,
    /// Picture parameter set.
    pub pps: Vec<u8>,
}

impl AvcParams {
    /// The SPS and PPS in an Annex-B access unit, if it has both.
    pub fn from_access_unit(au: &[u8]) -> Option<Self> {
        let mut sps = None;
        let mut pps = None;
        for nal in nal_units(au) {
            match nal[0] & 0x1f {
                NAL_SPS if sps.is_none() && nal.len() >= 4 => sps = Some(nal.to_vec()),
                NAL_PPS if pps.is_none() => pps = Some(nal.to_vec()),
                _ => {}
            }
        }
        Some(Self {
            sps: sps?,
            pps: pps?,
        })
    }

    /// The `avcC` box body (AVCDecoderConfigurationRecord, 4-byte lengths).
    fn avcc(&self) -> Vec<u8> {
        let mut b = vec![1, self.sps[1], self.sps[2], self.sps[3], 0xff, 0xe1];
        b.extend_from_slice(&(self.sps.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.sps);
        b.push(1);
        b.extend_from_slice(&(self.pps.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.pps);
        b
    }
}

/// An Annex-B access unit as an MP4 sample: 4-byte big-endian lengths, access unit
/// delimiters dropped, and parameter sets dropped when they are the ones in `params` (the
/// `avcC` box has them). Changed parameter sets stay in band.
pub fn to_length_prefixed(au: &[u8], params: &AvcParams) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len() + 16);
    for nal in nal_units(au) {
        let drop = match nal[0] & 0x1f {
            NAL_AUD => true,
            NAL_SPS => nal == params.sps.as_slice(),
            NAL_PPS => nal == params.pps.as_slice(),
            _ => false,
        };
        if !drop {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
    }
    out
}

/// Builds boxes into a byte vector.
#[derive(Default)]
struct Boxes {
    b: Vec<u8>,
}

impl Boxes {
    /// A box of type `typ` whose body `body` writes.
    fn boxed(&mut self, typ: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let at = self.b.len();
        self.b.extend_from_slice(&[0, 0, 0, 0]);
        self.b.extend_from_slice(typ);
        body(self);
        let size = (self.b.len() - at) as u32;
        self.b[at..at + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// A full box (version and flags first).
    fn full(&mut self, typ: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.boxed(typ, |b| {
            b.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
            body(b);
        });
    }

    fn u16(&mut self, v: u16) {
        self.b.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.b.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.b.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.b.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.b.resize(self.b.len() + n, 0);
    }
    /// The identity matrix of `mvhd`/`tkhd`.
    fn matrix(&mut self) {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
}

/// What describes the one video track.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// Ticks per second of sample times.
    pub timescale: u32,
    /// Parameter sets.
    pub params: AvcParams,
}

fn ftyp(b: &mut Boxes, fragmented: bool) {
    b.boxed(b"ftyp", |b| {
        b.bytes(b"isom");
        b.u32(0x200);
        b.bytes(b"isomiso2avc1mp41");
        if fragmented {
            b.bytes(b"iso6cmfc");
        }
    });
}

/// `moov` of a file with `samples` (progressive) or of an init segment (`samples` empty,
/// `fragmented`).
fn moov(b: &mut Boxes, t: &VideoTrack, samples: &[Sample], chunk_offset: u64, fragmented: bool) {
    let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
    b.boxed(b"moov", |b| {
        b.full(b"mvhd", 1, 0, |b| {
            b.u64(0);
            b.u64(0);
            b.u32(t.timescale);
            b.u64(duration);
            b.u32(0x0001_0000); // rate 1.0
            b.u16(0x0100); // volume 1.0
            b.zeros(10);
            b.matrix();
            b.zeros(24);
            b.u32(2); // next track id
        });
        b.boxed(b"trak", |b| {
            b.full(b"tkhd", 1, 0x3, |b| {
                b.u64(0);
                b.u64(0);
                b.u32(1); // track id
                b.u32(0);
                b.u64(duration);
                b.zeros(8);
                b.u16(0); // layer
                b.u16(0); // alternate group
                b.u16(0); // volume (video)
                b.u16(0);
                b.matrix();
                b.u32(u32::from(t.width) << 16);
                b.u32(u32::from(t.height) << 16);
            });
            b.boxed(b"mdia", |b| {
                b.full(b"mdhd", 1, 0, |b| {
                    b.u64(0);
                    b.u64(0);
                    b.u32(t.timescale);
                    b.u64(duration);
                    b.u16(0x55c4); // "und"
                    b.u16(0);
                });
                b.full(b"hdlr", 0, 0, |b| {
                    b.u32(0);
                    b.bytes(b"vide");
                    b.zeros(12);
                    b.bytes(b"xoq video\0");
                });
                b.boxed(b"minf", |b| {
                    b.full(b"vmhd", 0, 1, |b| b.zeros(8));
                    b.boxed(b"dinf", |b| {
                        b.full(b"dref", 0, 0, |b| {
                            b.u32(1);
                            b.full(b"url ", 0, 1, |_| {});
                        });
                    });
                    stbl(b, t, samples, chunk_offset);
                });
            });
        });
        if fragmented {
            b.boxed(b"mvex", |b| {
                b.full(b"trex", 0, 0, |b| {
                    b.u32(1); // track id
                    b.u32(1); // sample description
                    b.u32(0);
                    b.u32(0);
                    b.u32(0);
                });
            });
        }
    });
}

fn stbl(b: &mut Boxes, t: &VideoTrack, samples: &[Sample], chunk_offset: u64) {
    b.boxed(b"stbl", |b| {
        b.full(b"stsd", 0, 0, |b| {
            b.u32(1);
            b.boxed(b"avc1", |b| {
                b.zeros(6);
                b.u16(1); // data reference index
                b.zeros(16);
                b.u16(t.width);
                b.u16(t.height);
                b.u32(0x0048_0000); // 72 dpi
                b.u32(0x0048_0000);
                b.u32(0);
                b.u16(1); // frames per sample
                b.zeros(32); // compressor name
                b.u16(0x18); // depth
                b.u16(0xffff);
                b.boxed(b"avcC", |b| b.bytes(&t.params.avcc()));
            });
        });
        // Durations, run-length coded.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for s in samples {
            match runs.last_mut() {
                Some((n, d)) if *d == s.duration => *n += 1,
                _ => runs.push((1, s.duration)),
            }
        }
        b.full(b"stts", 0, 0, |b| {
            b.u32(runs.len() as u32);
            for (n, d) in &runs {
                b.u32(*n);
                b.u32(*d);
            }
        });
        if !samples.is_empty() {
            let keys: Vec<u32> = samples
                .iter()
                .enumerate()
                .filter(|(_, s)| s.keyframe)
                .map(|(i, _)| i as u32 + 1)
                .collect();
            b.full(b"stss", 0, 0, |b| {
                b.u32(keys.len() as u32);
                for k in keys {
                    b.u32(k);
                }
            });
        }
        // All samples in one chunk: the mdat holds them back to back.
        b.full(b"stsc", 0, 0, |b| {
            if samples.is_empty() {
                b.u32(0);
            } else {
                b.u32(1);
                b.u32(1);
                b.u32(samples.len() as u32);
                b.u32(1);
            }
        });
        b.full(b"stsz", 0, 0, |b| {
            b.u32(0);
            b.u32(samples.len() as u32);
            for s in samples {
                b.u32(s.size);
            }
        });
        b.full(b"co64", 0, 0, |b| {
            if samples.is_empty() {
                b.u32(0);
            } else {
                b.u32(1);
                b.u64(chunk_offset);
            }
        });
    });
}

/// One sample as the index sees it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    size: u32,
    duration: u32,
    keyframe: bool,
}

/// A progressive MP4 file: `ftyp`, one `mdat` written as samples arrive, `moov` at the end.
pub struct Mp4Writer<W: Write + Seek> {
    w: W,
    track: VideoTrack,
    samples: Vec<Sample>,
    mdat_at: u64,
    data_at: u64,
    written: u64,
}

impl<W: Write + Seek> Mp4Writer<W> {
    /// Start a file for `track`.
    pub fn new(mut w: W, track: VideoTrack) -> Result<Self, Mp4Error> {
        let mut b = Boxes::default();
        ftyp(&mut b, false);
        let mdat_at = b.b.len() as u64;
        // A 64-bit mdat header; its size is patched in `finish`.
        b.u32(1);
        b.bytes(b"mdat");
        b.u64(0);
        w.write_all(&b.b)?;
        let data_at = b.b.len() as u64;
        Ok(Self {
            w,
            track,
            samples: Vec::new(),
            mdat_at,
            data_at,
            written: 0,
        })
    }

    /// Append one sample (length-prefixed, see [`to_length_prefixed`]) lasting `duration`
    /// ticks of the track's timescale.
    pub fn push(&mut self, sample: &[u8], duration: u32, keyframe: bool) -> Result<(), Mp4Error> {
        if self.samples.is_empty() && !keyframe {
            return Err(Mp4Error::NoKeyframe);
        }
        self.w.write_all(sample)?;
        self.written += sample.len() as u64;
        self.samples.push(Sample {
            size: sample.len() as u32,
            duration,
            keyframe,
        });
        Ok(())
    }

    /// The parameter sets in the file's `avcC`.
    pub fn params(&self) -> &AvcParams {
        &self.track.params
    }

    /// Number of samples so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was pushed.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Patch the `mdat` size and write the index: the file is complete.
    pub fn finish(mut self) -> Result<W, Mp4Error> {
        let mut b = Boxes::default();
        moov(&mut b, &self.track, &self.samples, self.data_at, false);
        self.w.write_all(&b.b)?;
        let end = self.w.stream_position()?;
        self.w.seek(SeekFrom::Start(self.mdat_at + 8))?;
        self.w.write_all(&(16 + self.written).to_be_bytes())?;
        self.w.seek(SeekFrom::Start(end))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A fragmented MP4 (CMAF-style) stream: an init segment, then one `moof`+`mdat` fragment
/// per group of pictures. Each fragment is complete when written, so a recorder killed
/// outright leaves a file playable up to its last fragment.
pub struct FragmentedWriter<W: Write> {
    w: W,
    seq: u32,
    /// Decode time of the next fragment's first sample.
    base_time: u64,
    pending: Vec<(Vec<u8>, u32, bool)>,
}

impl<W: Write> FragmentedWriter<W> {
    /// Write the init segment (`ftyp` + `moov` with `mvex`).
    pub fn new(mut w: W, track: &VideoTrack) -> Result<Self, Mp4Error> {
        let mut b = Boxes::default();
        ftyp(&mut b, true);
        moov(&mut b, track, &[], 0, true);
        w.write_all(&b.b)?;
        w.flush()?;
        Ok(Self {
            w,
            seq: 0,
            base_time: 0,
            pending: Vec::new(),
        })
    }

    /// Add a sample; a keyframe first writes out the fragment before it.
    pub fn push(&mut self, sample: Vec<u8>, duration: u32, keyframe: bool) -> Result<(), Mp4Error> {
        if self.seq == 0 && self.pending.is_empty() && !keyframe {
            return Err(Mp4Error::NoKeyframe);
        }
        if keyframe && !self.pending.is_empty() {
            self.fragment()?;
        }
        self.pending.push((sample, duration, keyframe));
        Ok(())
    }

    /// Write the pending samples as one fragment.
    fn fragment(&mut self) -> Result<(), Mp4Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let n = self.pending.len() as u32;
        let mut b = Boxes::default();
        let mut data_offset_at = 0;
        b.boxed(b"moof", |b| {
            b.full(b"mfhd", 0, 0, |b| b.u32(self.seq));
            b.boxed(b"traf", |b| {
                // default-base-is-moof: data offsets count from this moof.
                b.full(b"tfhd", 0, 0x02_0000, |b| b.u32(1));
                b.full(b"tfdt", 1, 0, |b| b.u64(self.base_time));
                // data offset, then duration, size and flags per sample.
                b.full(b"trun", 0, 0x0701, |b| {
                    b.u32(n);
                    data_offset_at = b.b.len();
                    b.u32(0);
                    for (s, d, k) in &self.pending {
                        b.u32(*d);
                        b.u32(s.len() as u32);
                        b.u32(if *k { 0x0200_0000 } else { 0x0101_0000 });
                    }
                });
            });
        });
        let moof_len = b.b.len();
        let offset = (moof_len + 8) as u32;
        b.b[data_offset_at..data_offset_at + 4].copy_from_slice(&offset.to_be_bytes());
        let data_len: usize = self.pending.iter().map(|(s, _, _)| s.len()).sum();
        b.u32((8 + data_len) as u32);
        b.bytes(b"mdat");
        for (s, d, _) in self.pending.drain(..) {
            b.bytes(&s);
            self.base_time += u64::from(d);
        }
        self.w.write_all(&b.b)?;
        self.w.flush()?;
        Ok(())
    }

    /// Write what is pending and hand back the writer.
    pub fn finish(mut self) -> Result<W, Mp4Error> {
        self.fragment()?;
        Ok(self.w)
    }
}

/// Ticks per second of [`LiveMp4`] files (the usual video timescale; 1/90 ms steps).
pub const LIVE_TIMESCALE: u32 = 90_000;

/// One camera recorded as fragmented MP4 while it streams: samples are timed by their
/// capture times (each lasts until the next one is captured), and a fragment is written at
/// every keyframe, so the file plays up to the last complete group of pictures even if the
/// recorder is killed.
pub struct LiveMp4<W: Write> {
    out: Option<W>,
    w: Option<FragmentedWriter<W>>,
    params: Option<AvcParams>,
    first_ns: u64,
    /// The last sample, waiting for the next capture time to know its duration.
    pending: Option<(Vec<u8>, u64, bool)>,
    last_duration: u32,
    frames: u64,
}

impl<W: Write> LiveMp4<W> {
    /// A file to be written to `out`, starting at the first keyframe pushed.
    pub fn new(out: W) -> Self {
        Self {
            out: Some(out),
            w: None,
            params: None,
            first_ns: 0,
            pending: None,
            last_duration: LIVE_TIMESCALE / 30,
            frames: 0,
        }
    }

    /// Ticks from the first frame to `ns`.
    fn ticks(&self, ns: u64) -> u64 {
        (u128::from(ns.saturating_sub(self.first_ns)) * u128::from(LIVE_TIMESCALE) / 1_000_000_000)
            as u64
    }

    /// Add an Annex-B access unit captured at `capture_ns`. Frames before the first keyframe
    /// are skipped (returns false); so are frames whose capture time goes backwards.
    pub fn push(
        &mut self,
        annex_b: &[u8],
        capture_ns: u64,
        keyframe: bool,
    ) -> Result<bool, Mp4Error> {
        if self.w.is_none() {
            if !keyframe {
                return Ok(false);
            }
            let params = AvcParams::from_access_unit(annex_b).ok_or(Mp4Error::NoKeyframe)?;
            let (width, height) = picture_size(annex_b).ok_or(Mp4Error::NoKeyframe)?;
            let track = VideoTrack {
                width,
                height,
                timescale: LIVE_TIMESCALE,
                params: params.clone(),
            };
            let out = self.out.take().ok_or(Mp4Error::NoKeyframe)?;
            self.w = Some(FragmentedWriter::new(out, &track)?);
            self.params = Some(params);
            self.first_ns = capture_ns;
        }
        let Some(params) = &self.params else {
            return Ok(false);
        };
        if let Some((_, prev_ns, _)) = &self.pending
            && capture_ns <= *prev_ns
        {
            return Ok(false);
        }
        let sample = to_length_prefixed(annex_b, params);
        if let Some((s, prev_ns, key)) = self.pending.take() {
            let d = self.ticks(capture_ns) - self.ticks(prev_ns);
            let d = u32::try_from(d).map_err(|_| Mp4Error::Duration(self.frames))?;
            self.last_duration = d.max(1);
            if let Some(w) = &mut self.w {
                w.push(s, self.last_duration, key)?;
            }
        }
        self.pending = Some((sample, capture_ns, keyframe));
        self.frames += 1;
        Ok(true)
    }

    /// Frames taken so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Write the last sample (lasting as long as the one before) and the last fragment; the
    /// writer comes back (`None` if no keyframe ever came, so nothing was written).
    pub fn finish(mut self) -> Result<Option<W>, Mp4Error> {
        let Some(mut w) = self.w.take() else {
            return Ok(None);
        };
        if let Some((s, _, key)) = self.pending.take() {
            w.push(s, self.last_duration, key)?;
        }
        Ok(Some(w.finish()?))
    }
}

/// Width and height of the first picture of a keyframe access unit (decoded once).
fn picture_size(annex_b: &[u8]) -> Option<(u16, u16)> {
    let mut dec = xoq_media::h264::H264Decoder::new(xoq_media::MAX_PIXELS).ok()?;
    let p = dec.decode(annex_b).ok()??;
    Some((
        u16::try_from(p.width()).ok()?,
        u16::try_from(p.height()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            // Mix 4- and 3-byte start codes, as encoders do.
            if i == 0 {
                v.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                v.extend_from_slice(&[0, 0, 1]);
            }
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn parameter_sets_move_to_avcc_and_units_get_lengths() {
        let idr: &[u8] = &[0x65, 0x88, 0x00, 0x10];
        let a = au(&[&[0x09, 0xf0], SPS, PPS, idr]);
        let p = AvcParams::from_access_unit(&a).expect("params");
        assert_eq!((p.sps.as_slice(), p.pps.as_slice()), (SPS, PPS));
        assert_eq!(
            to_length_prefixed(&a, &p),
            [&[0, 0, 0, 4][..], idr].concat()
        );
        assert_eq!(
            p.avcc(),
            [
                &[1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 5][..],
                SPS,
                &[1, 0, 4],
                PPS
            ]
            .concat()
        );
        // A changed SPS stays in the sample.
        let sps2: &[u8] = &[0x67, 0x42, 0xc0, 0x20, 0xda];
        let b = au(&[sps2, PPS, idr]);
        assert_eq!(
            to_length_prefixed(&b, &p),
            [&[0, 0, 0, 5][..], sps2, &[0, 0, 0, 4], idr].concat()
        );
        assert_eq!(AvcParams::from_access_unit(&au(&[idr])), None);
    }

    #[test]
    fn a_progressive_file_indexes_every_sample() {
        let track = VideoTrack {
            width: 64,
            height: 48,
            timescale: 30_000,
            params: AvcParams {
                sps: SPS.to_vec(),
                pps: PPS.to_vec(),
            },
        };
        let mut w = Mp4Writer::new(std::io::Cursor::new(Vec::new()), track).expect("new");
        assert!(matches!(
            w.push(&[0, 0, 0, 1, 0x41], 1000, false),
            Err(Mp4Error::NoKeyframe)
        ));
        w.push(&[0, 0, 0, 1, 0x65], 1000, true).expect("key");
        w.push(&[0, 0, 0, 1, 0x41], 1000, false).expect("p");
        let bytes = w.finish().expect("finish").into_inner();
        // ftyp, mdat (64-bit size covering both samples), moov.
        assert_eq!(&bytes[4..8], b"ftyp");
        let mdat = bytes.windows(4).position(|w| w == b"mdat").expect("mdat") - 4;
        assert_eq!(&bytes[mdat..mdat + 4], &[0, 0, 0, 1]);
        let size = u64::from_be_bytes(bytes[mdat + 8..mdat + 16].try_into().expect("8"));
        assert_eq!(size, 16 + 10);
        let moov = mdat + size as usize;
        assert_eq!(&bytes[moov + 4..moov + 8], b"moov");
        let moov_size = u32::from_be_bytes(bytes[moov..moov + 4].try_into().expect("4"));
        assert_eq!(moov + moov_size as usize, bytes.len());
        // stts: one run of two samples of 1000 ticks.
        let stts = bytes.windows(4).position(|w| w == b"stts").expect("stts");
        assert_eq!(
            &bytes[stts + 8..stts + 20],
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 3, 0xe8]
        );
    }

    #[test]
    fn a_live_file_has_a_fragment_per_group_of_pictures() {
        use xoq_media::h264::{H264Config, H264Encoder};
        let (w, h) = (64u32, 48u32);
        let mut enc = H264Encoder::new(H264Config {
            fps: 30,
            bitrate: 300_000,
            gop: 30,
        })
        .expect("encoder");
        let mut live = LiveMp4::new(Vec::new());
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for i in 0..65u64 {
            rgb.fill((i * 3) as u8);
            let u = enc.encode_rgb(&rgb, w, h).expect("encode");
            if i == 0 {
                // A P-frame first would be skipped: players start at a keyframe.
                assert!(u.keyframe);
            }
            // Capture times 33.3 ms apart, with one late frame.
            let t = 1_000_000_000 + i * 33_333_333 + if i == 10 { 5_000_000 } else { 0 };
            assert!(live.push(&u.data, t, u.keyframe).expect("push"));
        }
        // A frame from the past is refused.
        assert!(!live.push(&[0, 0, 0, 1, 0x41, 0], 5, false).expect("push"));
        assert_eq!(live.frames(), 65);
        let out = live.finish().expect("finish").expect("written");
        let count = |tag: &[u8]| out.windows(4).filter(|x| *x == tag).count();
        assert_eq!(count(b"moof"), 3);
        assert_eq!(count(b"mvex"), 1);
        // trun sample counts: 30 + 30 + 5.
        let counts: Vec<u32> = out
            .windows(4)
            .enumerate()
            .filter(|(_, x)| *x == b"trun")
            .map(|(i, _)| u32::from_be_bytes(out[i + 8..i + 12].try_into().expect("4")))
            .collect();
        assert_eq!(counts, [30, 30, 5]);
    }

    proptest::proptest! {
        #[test]
        fn nal_splitting_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            for n in nal_units(&bytes) {
                proptest::prop_assert!(!n.is_empty());
            }
            let _ = AvcParams::from_access_unit(&bytes);
        }
    }
}
