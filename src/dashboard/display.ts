/**
 * A VM's screen in the browser: noVNC over the controller's authenticated
 * WebSocket (/api/v1/vms/NAME/display), which the controller relays to the
 * VM's QEMU through its node's agent. When the VM moves (a live migration),
 * the old QEMU closes the stream and the page connects again, to wherever
 * the VM runs now.
 */
import RFB from '@novnc/novnc';

const vm = new URLSearchParams(location.search).get('vm') ?? '';
const screen = document.getElementById('screen')!;
const state = document.getElementById('display-state')!;
document.getElementById('display-vm')!.textContent = vm;
let connects = 0;

function show(text: string, cls: string): void {
  state.textContent = text;
  state.className = `live ${cls}`;
  document.body.dataset.state = cls;
  document.body.dataset.connects = String(connects);
}

function connect(): void {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/vms/${encodeURIComponent(vm)}/display`;
  const rfb = new RFB(screen, url, { shared: true });
  rfb.scaleViewport = true;
  rfb.addEventListener('connect', () => {
    connects++;
    show('connected', 'connected');
  });
  rfb.addEventListener('disconnect', () => {
    show('reconnecting', 'reconnecting');
    setTimeout(connect, 1000);
  });
}

if (vm) connect();
else show('no VM named (?vm=NAME)', 'error');
