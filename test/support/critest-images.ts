// The images critest (cri-tools' CRI validation suite) pulls, built here, so that the suite
// runs with no network: test/e2e/critest.test.ts serves them from test/support/oci-registry.ts
// as a mirror of registry.k8s.io, gcr.io and k8s.gcr.io. Each stands in for the upstream
// image with what the specs use of it (read from cri-tools' pkg/validate):
//   busybox:1.29-2   Debian's static busybox with every applet, /etc/passwd and /etc/group;
//   nginx, httpd,    test/native/web-server.c as /usr/sbin/nginx (port 80, /var/run/nginx.pid),
//   hostnet-nginx    /usr/local/bin/httpd (port 80), /usr/sbin/nginx (port 12003);
//   nonewprivs       test/native/effective-uid.c, setuid root;
//   test-image-*     busybox with USER set as cri-tools' images/build sets it, or with a file
//                    of the image's name (distinct images), or one image under several tags;
//   pause:3.9        the pause of test/native/pause.c (also as the harness's sandbox image).
// Not reproducible: test-image-digest, which critest pulls by the upstream manifest's digest.

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ImageSpec, LayerItem } from "../../tools/image/index.ts";
import { CRI_IMAGES } from "./cri.ts";
import { REPO } from "./shim-env.ts";

const BUSYBOX = "/bin/busybox";
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const E2E = "registry.k8s.io/e2e-test-images";
const CRI_TOOLS = "gcr.io/k8s-staging-cri-tools";

/** critest's default container image (framework.DefaultLinuxContainerImage). */
export const CRITEST_BUSYBOX = `${E2E}/busybox:1.29-2`;
/**
 * The upstream hosts the images' names carry: the registry mirrors these. docker.io for the
 * harness's sandbox image (CRI_IMAGES.pause): critest's image specs remove images by id, the
 * sandbox image among them when it is the same image, and containerd then pulls it again.
 */
export const CRITEST_UPSTREAMS = ["registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io"];

function compile(source: string, out: string): string {
  const r = Bun.spawnSync(["clang", "-static", "-Os", "-s", "-o", out, join(REPO, "test/native", source)], {
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`clang ${source}: ${r.stderr.toString()}`);
  return out;
}

/** Every applet of the host's static busybox, at the path busybox itself installs it. */
function busyboxApplets(): string[] {
  const r = Bun.spawnSync([BUSYBOX, "--list-full"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${BUSYBOX} --list-full: ${r.stderr.toString()}`);
  return r.stdout
    .toString()
    .split("\n")
    .filter((p) => p && p !== "bin/busybox");
}

const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`;
const GROUP = `root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
`;

/** busybox's tree with `extra` files; /etc/passwd and /etc/group from `passwd`/`group`. */
function busyboxFiles(extra: LayerItem[] = [], passwd = PASSWD, group = GROUP): LayerItem[] {
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} not found (apt-get install busybox-static)`);
  const applets = busyboxApplets().map((p) => ({
    path: `/${p}`,
    // Relative, so the link resolves inside the container's root at any depth.
    symlink: `${"../".repeat(p.split("/").length - 1)}bin/busybox`,
  }));
  return [
    { path: "/bin/busybox", source: BUSYBOX, mode: 0o755 },
    // The upstream image's applets are hard links; runc masks a path (MaskedPaths) by
    // mounting over it, which a symlink does not take: /bin/ls, the path critest masks, is a
    // copy (busybox picks the applet from argv[0]).
    ...applets.filter((a) => a.path !== "/bin/ls"),
    { path: "/bin/ls", source: BUSYBOX, mode: 0o755 },
    // Two tools Debian's busybox lacks, as the specs use them: `pgrep NAME` (pids of NAME)
    // and `ipcs -m` (the IPC namespace's SysV shared memory table; the HostIpc specs look
    // for a segment id the host made).
    { path: "/usr/bin/pgrep", data: '#!/bin/sh\nfor n in "$@"; do pidof "$n"; done\n', mode: 0o755 },
    { path: "/usr/bin/ipcs", data: "#!/bin/sh\ncat /proc/sysvipc/shm\n", mode: 0o755 },
    { path: "/etc/passwd", data: passwd, mode: 0o644 },
    { path: "/etc/group", data: group, mode: 0o644 },
    { path: "/tmp", dir: true, mode: 0o1777 },
    { path: "/root", dir: true, mode: 0o700 },
    { path: "/var/run", dir: true },
    { path: "/var/www", dir: true },
    ...extra,
  ];
}

/** The image specs, with the two programs compiled into `dir`. */
export function critestImages(dir: string): ImageSpec[] {
  mkdirSync(dir, { recursive: true });
  const web = compile("web-server.c", join(dir, "web-server"));
  const euid = compile("effective-uid.c", join(dir, "effective-uid"));
  const pause = compile("pause.c", join(dir, "pause"));
  const busybox = (name: string, user?: string, extra: LayerItem[] = []): ImageSpec => ({
    name,
    files: busyboxFiles(extra),
    config: { cmd: ["sh"], env: [PATH_ENV], ...(user ? { user } : {}) },
  });
  const webImage = (name: string, path: string, port: number, pidFile?: string): ImageSpec => ({
    name,
    files: busyboxFiles([
      { path, source: web, mode: 0o755 },
      { path: "/usr/share/nginx/html/index.html", data: "<html>critest</html>\n" },
    ]),
    config: { entrypoint: [path, String(port), ...(pidFile ? [pidFile] : [])], env: [PATH_ENV] },
  });
  const tagged = (repo: string, tags: string[], spec: (name: string) => ImageSpec) => tags.map((t) => spec(`${repo}:${t}`));
  return [
    busybox(CRITEST_BUSYBOX),
    webImage(`${E2E}/nginx:1.14-2`, "/usr/sbin/nginx", 80, "/var/run/nginx.pid"),
    webImage(`${E2E}/httpd:2.4.39-4`, "/usr/local/bin/httpd", 80),
    webImage(`${CRI_TOOLS}/hostnet-nginx-amd64:latest`, "/usr/sbin/nginx", 12003, "/var/run/nginx.pid"),
    {
      name: `${E2E}/nonewprivs:1.3`,
      files: busyboxFiles([{ path: "/usr/local/bin/nnp", source: euid, mode: 0o4755 }]),
      config: { entrypoint: ["/usr/local/bin/nnp"], env: [PATH_ENV] },
    },
    // cri-tools' images/build: USER per image.
    busybox(`${CRI_TOOLS}/test-image-user-uid:latest`, "1002"),
    busybox(`${CRI_TOOLS}/test-image-user-username:latest`, "www-data"),
    busybox(`${CRI_TOOLS}/test-image-user-uid-group:latest`, "1003:1004"),
    busybox(`${CRI_TOOLS}/test-image-user-username-group:latest`, "www-data:1004"),
    {
      name: `${CRI_TOOLS}/test-image-predefined-group:latest`,
      files: busyboxFiles(
        [{ path: "/home/default-user", dir: true }],
        `${PASSWD}default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n`,
        `${GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n`,
      ),
      config: { cmd: ["sh"], env: [PATH_ENV], user: "1000" },
    },
    // images/image-test: busybox plus a file named after the image, so each is its own image.
    ...[
      "test-image-latest:latest",
      "test-image-tag:test",
      "test-image-tag:all",
      "test-image-1:latest",
      "test-image-2:latest",
      "test-image-3:latest",
    ].map((n) => busybox(`${CRI_TOOLS}/${n}`, undefined, [{ path: `/${n.split(":")[0]}`, data: n }])),
    // One image under three tags.
    ...tagged(`${CRI_TOOLS}/test-image-tags`, ["1", "2", "3"], (name) =>
      busybox(name, undefined, [{ path: "/test-image-tags", data: "tags" }]),
    ),
    // Two images: the spec that removes pause:3.9 by id counts its tags (the two registries').
    ...["registry.k8s.io/pause:3.9", CRI_IMAGES.pause].map((name) => ({
      name,
      files: [
        { path: "/pause", source: pause, mode: 0o755 },
        { path: "/etc/image-name", data: name },
      ],
      config: { entrypoint: ["/pause"] },
    })),
  ];
}
