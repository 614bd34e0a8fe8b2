// containerd's API as the shim uses it, over the gRPC socket containerd hands a shim as
// `-address` (src/containerd/grpc.ts). Every call is in one namespace, sent as the
// `containerd-namespace` header; writes under a lease carry `containerd-lease` too.
//
// Only what OCI wasm artifacts need (src/oci/artifact.ts): a container's image, the image's
// target, blobs and their labels, and writing a blob back under a lease.

import { type Container, ContainersDefinition } from "./gen/containerd/services/containers/v1/containers.ts";
import { ContentDefinition, type Info, WriteAction } from "./gen/containerd/services/content/v1/content.ts";
import { type Image, ImagesDefinition } from "./gen/containerd/services/images/v1/images.ts";
import { LeasesDefinition } from "./gen/containerd/services/leases/v1/leases.ts";
import { GrpcClient, GrpcCode, GrpcError, type Metadata } from "./grpc.ts";

export type { Container, Image, Info };
export { GrpcCode, GrpcError };

/** containerd's gRPC limit is 16 MiB per message; a write sends 1 MiB at a time. */
const WRITE_CHUNK = 1 << 20;

export class ContainerdClient {
  private readonly grpc: GrpcClient;

  constructor(
    readonly address: string,
    readonly namespace: string,
    opts: { timeoutMs?: number } = {},
  ) {
    this.grpc = new GrpcClient(address, opts);
  }

  private md(lease?: string): Metadata {
    const m: Metadata = { "containerd-namespace": this.namespace };
    if (lease) m["containerd-lease"] = lease;
    return m;
  }

  async container(id: string): Promise<Container> {
    const r = await this.grpc.unary(ContainersDefinition, ContainersDefinition.methods.get, { id }, this.md());
    if (!r.container) throw new GrpcError(GrpcCode.NOT_FOUND, `container ${id}: empty answer`, "containers.Get");
    return r.container;
  }

  async image(name: string): Promise<Image> {
    const r = await this.grpc.unary(ImagesDefinition, ImagesDefinition.methods.get, { name }, this.md());
    if (!r.image) throw new GrpcError(GrpcCode.NOT_FOUND, `image ${name}: empty answer`, "images.Get");
    return r.image;
  }

  async info(digest: string): Promise<Info> {
    const r = await this.grpc.unary(ContentDefinition, ContentDefinition.methods.info, { digest }, this.md());
    if (!r.info) throw new GrpcError(GrpcCode.NOT_FOUND, `content ${digest}: empty answer`, "content.Info");
    return r.info;
  }

  /**
   * A whole blob. `maxBytes` guards against a descriptor that names something huge: the
   * blob's size is asked first and a larger one is refused before any byte is read.
   */
  async read(digest: string, maxBytes = 256 << 20): Promise<Uint8Array> {
    const info = await this.info(digest);
    if (info.size > maxBytes) throw new Error(`content ${digest} is ${info.size} bytes, more than the ${maxBytes} allowed`);
    const out = new Uint8Array(info.size);
    let filled = 0;
    for await (const chunk of this.grpc.serverStream(
      ContentDefinition,
      ContentDefinition.methods.read,
      { digest, offset: 0, size: 0 },
      this.md(),
    )) {
      if (chunk.offset !== filled || filled + chunk.data.length > out.length)
        throw new Error(`content ${digest}: chunk at ${chunk.offset} (+${chunk.data.length}) does not follow ${filled} of ${out.length}`);
      out.set(chunk.data, filled);
      filled += chunk.data.length;
    }
    if (filled !== out.length) throw new Error(`content ${digest}: read ${filled} of ${out.length} bytes`);
    return out;
  }

  /**
   * Set (or, with "", remove) some labels of a blob and leave the others alone: the update
   * mask names each key (`labels.<key>`), so a concurrent writer of other keys is not undone.
   */
  async setLabels(digest: string, labels: Record<string, string>): Promise<Info> {
    const r = await this.grpc.unary(
      ContentDefinition,
      ContentDefinition.methods.update,
      { info: { digest, size: 0, labels }, updateMask: Object.keys(labels).map((k) => `labels.${k}`) },
      this.md(),
    );
    if (!r.info) throw new GrpcError(GrpcCode.INTERNAL, `content ${digest}: empty answer`, "content.Update");
    return r.info;
  }

  /**
   * Runs `fn` under a new lease and deletes the lease afterwards. What `fn` writes with the
   * lease is safe from the garbage collector until then. The lease expires by itself (an
   * hour) if this process dies first, so nothing is pinned for ever.
   */
  async withLease<T>(fn: (lease: string) => Promise<T>): Promise<T> {
    const expire = new Date(Date.now() + 3600_000).toISOString();
    const r = await this.grpc.unary(
      LeasesDefinition,
      LeasesDefinition.methods.create,
      {
        id: `bunwasi-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
        labels: { "containerd.io/gc.expire": expire },
      },
      this.md(),
    );
    const id = r.lease?.id;
    if (!id) throw new GrpcError(GrpcCode.INTERNAL, "no lease in the answer", "leases.Create");
    try {
      return await fn(id);
    } finally {
      await this.grpc.unary(LeasesDefinition, LeasesDefinition.methods.delete, { id, sync: false }, this.md()).catch(() => {});
    }
  }

  /**
   * Write `data` as one blob with `labels`, under `lease`: STAT, WRITE in chunks, COMMIT with
   * the expected digest and size (containerd verifies both). Content that is already there
   * is not written again; its labels are set instead. Returns the digest.
   */
  async write(
    opts: { ref: string; data: Uint8Array; expected: string; labels: Record<string, string>; lease: string },
    retried = false,
  ): Promise<string> {
    const { data, expected } = opts;
    const call = this.grpc.call(ContentDefinition, ContentDefinition.methods.write, this.md(opts.lease));
    const base = { ref: "", total: 0, expected: "", offset: 0, data: new Uint8Array(0), labels: {} };
    try {
      call.send({ ...base, action: WriteAction.STAT, ref: opts.ref, total: data.length, expected });
      const stat = await call.recv();
      if (!stat) throw new GrpcError(GrpcCode.INTERNAL, "no answer to STAT", "content.Write");
      // STAT says how much the ingest holds. All of it: containerd already has these bytes
      // (in its backing store, e.g. for another namespace) and only wants the COMMIT, which
      // checks the digest. Part of it: an ingest of the same ref left by a write that died,
      // whose bytes we cannot vouch for: drop it and start over, once.
      let offset = stat.offset === data.length ? data.length : 0;
      if (stat.offset > 0 && stat.offset < data.length) {
        call.cancel();
        if (retried)
          throw new Error(`content.Write ${opts.ref}: an ingest of ${stat.offset} bytes is in the way, and stays after an abort`);
        await this.abort(opts.ref);
        return this.write(opts, true);
      }
      while (offset < data.length) {
        const end = Math.min(offset + WRITE_CHUNK, data.length);
        call.send({ ...base, action: WriteAction.WRITE, offset, data: data.subarray(offset, end) });
        const r = await call.recv();
        if (!r) throw new GrpcError(GrpcCode.INTERNAL, `no answer to WRITE at ${offset}`, "content.Write");
        offset = end;
      }
      call.send({ ...base, action: WriteAction.COMMIT, total: data.length, offset: data.length, expected, labels: opts.labels });
      const done = await call.recv();
      call.end();
      if (!done) throw new GrpcError(GrpcCode.INTERNAL, "no answer to COMMIT", "content.Write");
      if (done.digest !== expected) throw new Error(`content.Write committed ${done.digest}, expected ${expected}`);
      while ((await call.recv()) !== undefined) {}
      return expected;
    } catch (e) {
      call.cancel();
      if (e instanceof GrpcError && e.code === GrpcCode.ALREADY_EXISTS) {
        await this.setLabels(expected, opts.labels);
        return expected;
      }
      throw e;
    }
  }

  /**
   * A garbage collection, finished before this returns: deleting a lease with `sync` makes
   * containerd collect at once (`ctr leases delete --sync`). A blob deleted from the metadata
   * stays in the backing store until a collection; this makes sure it is gone.
   */
  async collectGarbage(): Promise<void> {
    const id = `bunwasi-gc-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const r = await this.grpc.unary(LeasesDefinition, LeasesDefinition.methods.create, { id, labels: {} }, this.md());
    if (r.lease?.id) await this.grpc.unary(LeasesDefinition, LeasesDefinition.methods.delete, { id: r.lease.id, sync: true }, this.md());
  }

  /** Remove a blob; one that is not there is fine. */
  async delete(digest: string): Promise<void> {
    try {
      await this.grpc.unary(ContentDefinition, ContentDefinition.methods.delete, { digest }, this.md());
    } catch (e) {
      if (!(e instanceof GrpcError && e.code === GrpcCode.NOT_FOUND)) throw e;
    }
  }

  /** Drop an unfinished ingest; one that is not there is fine. */
  async abort(ref: string): Promise<void> {
    try {
      await this.grpc.unary(ContentDefinition, ContentDefinition.methods.abort, { ref }, this.md());
    } catch (e) {
      if (!(e instanceof GrpcError && e.code === GrpcCode.NOT_FOUND)) throw e;
    }
  }

  close(): void {
    this.grpc.close();
  }
}
