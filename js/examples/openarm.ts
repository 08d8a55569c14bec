// OpenArm in 3D, driven by the CAN state of its eight Damiao motors (simulated by `xoq demo`,
// or real ones behind `xoq can-server`), with sliders that publish MIT commands.
import * as THREE from "three";
import {
  DISABLE,
  ENABLE,
  OPENARM_MOTORS,
  canFrame,
  decodeFeedback,
  encodeMit,
  openCan,
  type CanFrame,
} from "../src/index";
import {
  Rolling,
  connectOrExplain,
  dialUrl,
  followLink,
  loadConfig,
  noPublisher,
  reportSendError,
  setStatus,
  waitForPublisher,
} from "./common";
import { armView } from "./scene";

const KP = 30;
const KD = 1;
const SEND_HZ = 50;
const names = ["J1", "J2", "J3", "J4", "J5", "J6", "J7", "gripper"];
// Joint axes of the drawn arm (OpenArm: alternating roll/pitch joints, elbow pitch).
const axes: [number, number, number][] = [
  [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0],
];
const lengths = [0.1, 0.08, 0.18, 0.05, 0.16, 0.05, 0.06];

const positions = new Array<number>(8).fill(0);
const targets = new Array<number>(8).fill(0);
const state = window.xoqState;
Object.assign(state, { enabled: false, joints: positions, fps: 0, latencyMs: null, frames: 0 });

// --- scene -------------------------------------------------------------------------------
const view = armView(document.getElementById("view") as HTMLElement, [1.1, -1.1, 0.75], [0, 0, 0.36], 1.2);
const scene = view.scene;

const bodyMat = new THREE.MeshStandardMaterial({ color: 0xd8d8dc, metalness: 0.3, roughness: 0.5 });
const motorMat = new THREE.MeshStandardMaterial({ color: 0x2b2f3a, metalness: 0.4, roughness: 0.6 });
const joints: THREE.Object3D[] = [];
let parent: THREE.Object3D = new THREE.Group();
scene.add(parent);
parent.add(new THREE.Mesh(new THREE.CylinderGeometry(0.07, 0.08, 0.04, 32), motorMat).rotateX(Math.PI / 2).translateY(0.02));
for (let i = 0; i < 7; i++) {
  const joint = new THREE.Group();
  joint.position.z = i === 0 ? 0.04 : lengths[i - 1];
  parent.add(joint);
  const motor = new THREE.Mesh(new THREE.CylinderGeometry(0.035, 0.035, 0.06, 24), motorMat);
  // Draw each motor along its own axis.
  const [ax, ay] = axes[i];
  if (ax) motor.rotation.z = Math.PI / 2;
  else if (!ay) motor.rotation.x = Math.PI / 2;
  joint.add(motor);
  const link = new THREE.Mesh(new THREE.BoxGeometry(0.045, 0.045, lengths[i]), bodyMat);
  link.position.z = lengths[i] / 2;
  joint.add(link);
  joints.push(joint);
  parent = joint;
}
const fingers = [-1, 1].map((side) => {
  const f = new THREE.Mesh(new THREE.BoxGeometry(0.012, 0.03, 0.07), motorMat);
  f.position.set(side * 0.02, 0, lengths[6] + 0.035);
  joints[6].add(f);
  return f;
});

view.start(() => {
  for (let i = 0; i < 7; i++) {
    const [x, y, z] = axes[i];
    joints[i].setRotationFromAxisAngle(new THREE.Vector3(x, y, z), positions[i]);
  }
  const open = Math.min(Math.max(positions[7], -0.2), 1.5) * 0.02;
  fingers[0].position.x = -0.012 - open;
  fingers[1].position.x = 0.012 + open;
});

// --- controls ----------------------------------------------------------------------------
const panel = document.getElementById("sliders") as HTMLElement;
const readouts: HTMLElement[] = [];
OPENARM_MOTORS.forEach((m, i) => {
  const row = document.createElement("div");
  row.className = "row";
  const label = document.createElement("span");
  label.textContent = `${names[i]} (0x${m.id.toString(16).padStart(2, "0")})`;
  const slider = document.createElement("input");
  slider.type = "range";
  slider.id = `j${i + 1}`;
  slider.min = i === 7 ? "-0.2" : "-3";
  slider.max = i === 7 ? "1.5" : "3";
  slider.step = "0.01";
  slider.value = "0";
  slider.addEventListener("input", () => {
    targets[i] = Number(slider.value);
  });
  const out = document.createElement("span");
  out.textContent = "–";
  readouts.push(out);
  row.append(label, slider, out);
  panel.appendChild(row);
});
const stats = document.getElementById("stats") as HTMLElement;

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const relay = await connectOrExplain(cfg);
  if (!(await waitForPublisher(relay, `${cfg.openarm}/state`))) {
    noPublisher(cfg.openarm, cfg.relay, "start `xoq demo`, or `xoq can-server sim:openarm --relay <url> --moq <path> --moq-writes on`");
    return;
  }
  setStatus(`found OpenArm "${cfg.openarm}"; waiting for the server to acknowledge this page …`);
  const bus = await openCan(dialUrl(cfg), cfg.openarm, { relay });
  followLink(bus.link, relay, `connected to ${cfg.relay}, OpenArm "${cfg.openarm}"; press Enable, then drag a slider`);

  const latency = new Rolling(50);
  let sentAt: number | undefined;
  let frames = 0;
  let lastCount = 0;
  let lastTick = performance.now();

  // Commands are never queued: while the link is down a send fails at once (the status line
  // says why), and the next tick sends the current targets.
  const sendAll = (cmd: (i: number) => ArrayLike<number>): boolean => {
    try {
      bus.send(OPENARM_MOTORS.map((m, i) => canFrame(m.id, cmd(i), { extended: false })));
    } catch (e) {
      reportSendError(e);
      return false;
    }
    sentAt ??= performance.now();
    return true;
  };
  document.getElementById("enable")?.addEventListener("click", () => {
    if (sendAll(() => ENABLE)) state.enabled = true;
  });
  document.getElementById("disable")?.addEventListener("click", () => {
    sendAll(() => DISABLE);
    state.enabled = false;
  });
  setInterval(() => {
    if (state.enabled) sendAll((i) => encodeMit(OPENARM_MOTORS[i].model, targets[i], 0, KP, KD, 0));
    const now = performance.now();
    state.fps = Math.round(((frames - lastCount) * 1000) / (now - lastTick));
    lastCount = frames;
    lastTick = now;
    const l = latency.median();
    state.latencyMs = l ?? null;
    stats.textContent =
      `state frames/s  ${state.fps}\n` +
      `cmd → reply     ${l === undefined ? "–" : `${l.toFixed(2)} ms (median of last 50)`}\n` +
      `motors enabled  ${state.enabled}\n` +
      `link            ${bus.link.state}${bus.link.counters.reconnects ? ` (${bus.link.counters.reconnects} reconnects)` : ""}`;
  }, 1000 / SEND_HZ);

  for await (const f of bus as AsyncIterable<CanFrame>) {
    frames++;
    state.frames = frames;
    const i = OPENARM_MOTORS.findIndex((m) => m.replyId === f.id);
    if (i < 0) continue;
    const fb = decodeFeedback(OPENARM_MOTORS[i].model, f.data);
    if (!fb) continue;
    if (i === 0 && sentAt !== undefined) {
      latency.push(performance.now() - sentAt);
      sentAt = undefined;
    }
    positions[i] = fb.position;
    readouts[i].textContent = fb.position.toFixed(2);
  }
  if (bus.link.state !== "closed") setStatus("the state stream ended; reload to reconnect", "error");
}

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});
