//! The backend's socket code against [`FakeKernel`] and injected faults: what reaches the
//! "kernel", back-off on `ENOBUFS`, losing and reopening the interface.

use std::time::Duration;

use tokio::time::{Instant, timeout};

use super::fake::FakeKernel;
use super::*;

/// Generous guard against hangs; never an assertion on speed.
const HANG: Duration = Duration::from_secs(10);

struct Rig {
    kernel: Arc<FakeKernel>,
    plan: Arc<FaultPlan>,
    stats: Arc<SocketCanStats>,
    bus: OpenCan,
}

fn rig(fd: bool) -> Rig {
    let kernel = FakeKernel::new();
    let plan = FaultPlan::new();
    let backend = SocketCanBackend::new("can0", fd)
        .with_opener(kernel.clone())
        .with_faults(plan.clone());
    let stats = backend.stats();
    let bus = backend.open().expect("open on the fake kernel");
    Rig {
        kernel,
        plan,
        stats,
        bus,
    }
}

async fn next_event(bus: &mut OpenCan) -> BusEvent {
    timeout(HANG, bus.rx.recv())
        .await
        .expect("an event in time")
        .expect("receive task alive")
}

async fn send(bus: &mut OpenCan, f: &CanFrame) -> Result<(), DeviceError> {
    timeout(HANG, bus.tx.send(f)).await.expect("send returns")
}

async fn read(kernel: &FakeKernel) -> Vec<u8> {
    timeout(HANG, kernel.read_raw())
        .await
        .expect("a datagram in time")
        .expect("read")
}

/// Frames flow both ways on the current socket.
async fn assert_traffic(r: &mut Rig, id: u32) {
    let out = CanFrame::new(id, vec![1, 2, 3]).expect("frame");
    send(&mut r.bus, &out).await.expect("send");
    assert_eq!(
        timeout(HANG, r.kernel.read_frame())
            .await
            .expect("in time")
            .expect("read"),
        out
    );
    let inc = CanFrame::new(id + 1, vec![4]).expect("frame");
    r.kernel.deliver(&inc).await.expect("deliver");
    match next_event(&mut r.bus).await {
        BusEvent::Frame(t) => assert_eq!(t.frame, inc),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test]
async fn sent_frames_reach_the_kernel_byte_exact() {
    let mut r = rig(true);
    let classic = CanFrame::new(0x1ABC_DEF0, vec![0xDE, 0xAD, 0xBE, 0xEF]).expect("classic");
    let fd = CanFrame::new_fd(0x123, vec![9u8; 48], true).expect("fd");
    for f in [classic, fd] {
        send(&mut r.bus, &f).await.expect("send");
        let (want, n) = to_kernel(&f);
        assert_eq!(read(&r.kernel).await, want[..n].to_vec());
    }
    assert_eq!(r.plan.write_attempts(), 2);
}

#[tokio::test]
async fn fd_frame_on_a_classic_bus_is_refused() {
    let mut r = rig(false);
    let fd = CanFrame::new_fd(0x5, vec![1; 12], false).expect("fd");
    let e = send(&mut r.bus, &fd).await.expect_err("classic bus");
    assert!(matches!(e, DeviceError::Unsupported { .. }), "{e}");
    assert_eq!(r.plan.write_attempts(), 0);
}

#[tokio::test]
async fn kernel_frames_are_received_with_a_timestamp() {
    let mut r = rig(false);
    let before = now_us();
    let f = CanFrame::new(0x42, vec![7; 8]).expect("frame");
    r.kernel.deliver(&f).await.expect("deliver");
    match next_event(&mut r.bus).await {
        BusEvent::Frame(t) => {
            assert_eq!(t.frame, f);
            // No SIOCGSTAMP on a unix socket: stamped on arrival instead.
            assert!(t.timestamp_us >= before, "{} < {before}", t.timestamp_us);
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test]
async fn bus_off_error_frame_reports_state_then_the_frame() {
    let mut r = rig(false);
    let mut b = [0u8; CAN_MTU];
    b[0..4].copy_from_slice(&(CAN_ERR_FLAG | CAN_ERR_BUSOFF).to_ne_bytes());
    b[4] = 8;
    r.kernel.deliver_raw(&b).await.expect("deliver");
    assert_eq!(
        next_event(&mut r.bus).await,
        BusEvent::State(BusState::BusOff)
    );
    assert!(matches!(next_event(&mut r.bus).await, BusEvent::Frame(t) if t.frame.error));
}

#[tokio::test]
async fn enobufs_returns_busy_after_growing_back_offs_without_spinning() {
    let mut r = rig(false);
    let f = CanFrame::new(0x10, vec![1]).expect("frame");
    const N: u32 = 8;
    r.plan.fail_writes(N, libc::ENOBUFS);
    let mut expected = Duration::from_millis(1);
    for i in 0..N {
        let t = Instant::now();
        match send(&mut r.bus, &f).await {
            Err(DeviceError::Busy { waited, device }) => {
                assert_eq!(device, "can0");
                assert_eq!(waited, expected, "step {i}");
                assert!(t.elapsed() >= waited, "returned before its back-off");
            }
            other => panic!("attempt {i}: expected Busy, got {other:?}"),
        }
        // One write per call: it waited instead of retrying.
        assert_eq!(r.plan.write_attempts(), u64::from(i) + 1);
        expected = (expected * 2).min(Duration::from_millis(64));
    }
    assert_eq!(r.stats.busy(), u64::from(N));
    send(&mut r.bus, &f).await.expect("queue drained");
    assert_eq!(r.plan.write_attempts(), u64::from(N) + 1);
    assert_eq!(read(&r.kernel).await.len(), CAN_MTU);
    // A success resets the back-off.
    r.plan.fail_writes(1, libc::ENOBUFS);
    match send(&mut r.bus, &f).await {
        Err(DeviceError::Busy { waited, .. }) => assert_eq!(waited, Duration::from_millis(1)),
        other => panic!("expected Busy, got {other:?}"),
    }
    let e = DeviceError::Busy {
        device: "can0".into(),
        waited: Duration::from_millis(1),
    };
    assert!(e.to_string().contains("are the motors powered"), "{e}");
}

#[tokio::test]
async fn full_socket_buffer_returns_busy_then_sends_once_drained() {
    let mut r = rig(false);
    let f = CanFrame::new(0x20, vec![2]).expect("frame");
    // The "kernel" reads nothing, so the socket fills (unix datagram queue limit).
    let mut sent = 0u64;
    let waited = loop {
        match send(&mut r.bus, &f).await {
            Ok(()) => sent += 1,
            Err(DeviceError::Busy { waited, .. }) => break waited,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(sent < 100_000, "the socket never filled");
    };
    assert_eq!(waited, WRITABLE_WAIT);
    // It waited for writability: at most one failed write (the one that found it full).
    assert!(
        r.plan.write_attempts() <= sent + 1,
        "{} writes",
        r.plan.write_attempts()
    );
    // A unix socket reports room only once most of its buffer is free: drain it all.
    for _ in 0..sent {
        read(&r.kernel).await;
    }
    send(&mut r.bus, &f).await.expect("room again");
}

#[tokio::test]
async fn read_error_goes_down_reopens_and_traffic_resumes() {
    let mut r = rig(false);
    assert_traffic(&mut r, 0x100).await;
    // Keep it down until the test has looked.
    r.plan.fail_opens(u32::MAX, libc::ENETDOWN);
    r.plan.fail_reads(1, libc::EIO);
    r.kernel.deliver_raw(&[0u8; CAN_MTU]).await.expect("poke");
    match next_event(&mut r.bus).await {
        BusEvent::Down(reason) => assert!(reason.contains("os error 5"), "{reason}"),
        other => panic!("expected Down, got {other:?}"),
    }
    // While down, send fails at once instead of hanging.
    let f = CanFrame::new(0x1, vec![]).expect("frame");
    let writes = r.plan.write_attempts();
    let e = send(&mut r.bus, &f).await.expect_err("down");
    assert!(matches!(e, DeviceError::Down { .. }), "{e}");
    assert!(e.to_string().contains("frame not sent"), "{e}");
    assert_eq!(r.plan.write_attempts(), writes);
    r.plan.fail_opens(0, 0);
    assert_eq!(next_event(&mut r.bus).await, BusEvent::Up);
    assert_eq!(r.kernel.opens(), 2);
    assert_eq!((r.stats.downs(), r.stats.reopens()), (1, 1));
    assert_traffic(&mut r, 0x200).await;
}

#[tokio::test]
async fn unplug_then_failing_opener_is_retried_with_back_off() {
    let mut r = rig(false);
    r.plan.fail_opens(3, libc::ENODEV);
    let t = Instant::now();
    r.kernel.unplug();
    match next_event(&mut r.bus).await {
        BusEvent::Down(reason) => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("expected Down, got {other:?}"),
    }
    assert_eq!(next_event(&mut r.bus).await, BusEvent::Up);
    // 100 + 200 + 400 ms of failures, then 800 ms before the attempt that worked.
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.plan.open_attempts(), 1 + 4);
    assert_eq!(r.stats.failed_reopens(), 3);
    assert_eq!(r.kernel.opens(), 2);
    assert_traffic(&mut r, 0x300).await;
}

#[tokio::test]
async fn first_open_failure_is_an_open_error() {
    let plan = FaultPlan::new();
    plan.fail_opens(1, libc::ENODEV);
    let e = SocketCanBackend::new("can0", false)
        .with_opener(FakeKernel::new())
        .with_faults(plan)
        .open()
        .expect_err("injected");
    assert!(matches!(e, DeviceError::Open { .. }), "{e}");
}

#[tokio::test]
async fn dropping_the_bus_closes_the_socket() {
    let r = rig(false);
    let kernel = r.kernel.clone();
    drop(r);
    // The receive task held the socket: end of file shows it ended and closed it.
    let e = timeout(HANG, kernel.read_raw())
        .await
        .expect("in time")
        .expect_err("closed");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn dropping_the_receiver_while_down_stops_reopening() {
    let Rig {
        kernel, plan, bus, ..
    } = rig(false);
    plan.fail_opens(u32::MAX, libc::ENODEV);
    let OpenCan { mut rx, tx, .. } = bus;
    kernel.unplug();
    assert!(matches!(
        timeout(HANG, rx.recv()).await.expect("in time"),
        Some(BusEvent::Down(_))
    ));
    drop(rx);
    drop(tx);
    let attempts = plan.open_attempts();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // At most the attempt that was already due when the receiver went away.
    assert!(plan.open_attempts() <= attempts + 1);
}

#[tokio::test]
#[ignore = "needs vcan: ip link add dev vcan0 type vcan && ip link set up vcan0"]
async fn vcan_roundtrip() {
    let mut a = SocketCanBackend::new("vcan0", false).open().expect("vcan0");
    let mut b = SocketCanBackend::new("vcan0", false).open().expect("vcan0");
    let f = CanFrame::new(0x7, vec![1, 2]).expect("frame");
    send(&mut a, &f).await.expect("send");
    match next_event(&mut b).await {
        BusEvent::Frame(t) => assert_eq!(t.frame, f),
        other => panic!("expected a frame, got {other:?}"),
    }
}
