// The 3D view both arm pages share: renderer, z-up camera with orbit controls, lights, floor
// grid, resizing, and a render loop that runs `update` before each frame.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

export interface ArmView {
  scene: THREE.Scene;
  start(update: () => void): void;
}

/** A view in `container`, looking from `eye` at `target` (metres, z up). */
export function armView(
  container: HTMLElement,
  eye: [number, number, number],
  target: [number, number, number],
  gridSize: number,
): ArmView {
  // preserveDrawingBuffer: screenshots (tests, users) see the last frame.
  const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  container.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x0d0e12);
  const camera = new THREE.PerspectiveCamera(45, 1, 0.01, 10);
  camera.up.set(0, 0, 1);
  camera.position.set(...eye);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.target.set(...target);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x333344, 2.0));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(1, -1, 2);
  scene.add(sun);
  const grid = new THREE.GridHelper(gridSize, Math.round(gridSize * 12), 0x444455, 0x2a2a33);
  grid.rotation.x = Math.PI / 2;
  scene.add(grid);
  const resize = (): void => {
    const w = container.clientWidth;
    const h = Math.max(420, container.clientHeight);
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  };
  window.addEventListener("resize", resize);
  resize();
  return {
    scene,
    start(update: () => void): void {
      const frame = (): void => {
        update();
        controls.update();
        renderer.render(scene, camera);
        requestAnimationFrame(frame);
      };
      requestAnimationFrame(frame);
    },
  };
}
