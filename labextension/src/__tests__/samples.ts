/**
 * Sample payloads in the shapes the kernel sends (see the issue #5 brief).
 * Not a test file itself (the jest testRegex takes *.spec.ts only).
 */

export const diffPayload = {
  version: 1,
  cell: 3,
  command: 'echo hi > /etc/motd && rm /usr/bin/less && mkdir -p /opt/app',
  layer: 2,
  entries: [
    { path: '/etc', kind: 'C', type: 'dir', size: 0, layer: 0, opaque: false, note: '' },
    {
      path: '/etc/motd',
      kind: 'C',
      type: 'file',
      size: 3,
      layer: 0,
      opaque: false,
      note: 'copied up from layer 0'
    },
    // no note at all: the extension words it from the fields
    { path: '/usr/bin/less', kind: 'D', type: 'file', size: 0, layer: 0, opaque: false },
    { path: '/opt/app', kind: 'A', type: 'dir', size: 0, layer: null, opaque: true, note: '' },
    {
      path: '/opt/app/run.sh',
      kind: 'A',
      type: 'file',
      size: 2048,
      layer: null,
      opaque: false,
      note: ''
    },
    { path: '/opt', kind: 'C', type: 'dir', size: 0, layer: 0, opaque: false, note: '' }
  ],
  totals: { added: 2, changed: 3, deleted: 1, bytes: 2051 }
};

export const layersPayload = {
  version: 1,
  image: 'base',
  image_id: '0123456789ab',
  session: 's1',
  layers: [
    {
      index: 0,
      id: 'aaaaaaaaaaaa',
      size: 50 * 1024 * 1024,
      files: 1200,
      created_by: 'sandbox image build-base',
      cell: null,
      command: '',
      source: 'base',
      changes: []
    },
    {
      index: 1,
      id: 'bbbbbbbbbbbb',
      size: 4096,
      files: 1,
      created_by: 'cell 1: echo hi > /hello',
      cell: 1,
      command: 'echo hi > /hello',
      source: 'cell',
      changes: [
        { path: '/hello', kind: 'A', type: 'file', size: 3, layer: null, opaque: false, note: '' }
      ]
    },
    {
      index: 2,
      id: 'cccccccccccc',
      size: 8192,
      files: 2,
      created_by: 'cell 4: rm /hello; mkdir /data',
      cell: 4,
      command: 'rm /hello; mkdir /data',
      source: 'cell',
      changes: [
        {
          path: '/hello',
          kind: 'D',
          type: 'file',
          size: 0,
          layer: 1,
          opaque: false,
          note: "whiteout: hides layer 1's copy"
        },
        { path: '/data', kind: 'A', type: 'dir', size: 0, layer: null, opaque: false, note: '' }
      ]
    }
  ],
  upper: { note: 'writable, one fresh per cell' },
  mount: {
    lowerdir: ['layer-2', 'layer-1', 'layer-0'],
    upperdir: 'upper',
    workdir: 'work',
    merged: 'merged'
  },
  svg:
    '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">' +
    '<script>alert(1)</script><text>m\u00e9rged</text></svg>'
};

export const statsPayload = {
  version: 1,
  cell: 5,
  container: 'nbs1-5',
  duration: 2.5,
  samples: [
    [0, 1048576, 0, 1],
    [0.5, 100 * 1048576, 40, 3],
    [1, 200 * 1048576, 50, 4],
    [2.5, 512 * 1048576, 10, 2]
  ],
  memory: { current: 400 * 1048576, peak: 512 * 1048576, limit: 512 * 1048576 },
  cpu: { percent_peak: 50, percent_avg: 25, limit_cpus: 0.5 },
  pids: { peak: 4, limit: 64 },
  oom_killed: true,
  pids_limit_hit: false
};

/** A rendermime model around one MIME bundle entry. */
export function mimeModel(mimeType: string, data: unknown): any {
  return {
    trusted: false,
    data: { [mimeType]: data },
    metadata: {},
    setData: () => undefined
  };
}

export function clone<T>(x: T): T {
  return JSON.parse(JSON.stringify(x));
}
