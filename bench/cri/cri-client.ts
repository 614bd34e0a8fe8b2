// The few CRI calls a pod-start benchmark makes, over containerd's gRPC socket as the kubelet
// makes them (src/containerd/grpc.ts), with no crictl process per call: a crictl start would
// add the same tens of milliseconds to every row and hide the differences being measured.
//
// The messages are written by hand, only the fields we set or read, with the field numbers of
// k8s.io/cri-api's runtime/v1 api.proto (protobuf skips the rest). The pod's PodSandboxConfig
// is the generated one the Sandbox API already uses (src/task/gen/k8s/cri/v1).

import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { GrpcClient, type MessageType, type MethodDefinition } from "../../src/containerd/grpc.ts";
import { PodSandboxConfig } from "../../src/task/gen/k8s/cri/v1/pod_sandbox_config.ts";

export { PodSandboxConfig };

/** What a benchmark's container runs: ContainerConfig's metadata, image, command, args, log_path. */
export interface ContainerConfig {
  name: string;
  image: string;
  command: string[];
  args: string[];
  /** Relative to the pod's log_directory. */
  logPath: string;
}

export interface PodSandboxItem {
  id: string;
  /** 0 SANDBOX_READY, 1 SANDBOX_NOTREADY. */
  state: number;
  runtimeHandler: string;
}

export interface ContainerItem {
  id: string;
  podSandboxId: string;
  /** 0 CREATED, 1 RUNNING, 2 EXITED, 3 UNKNOWN. */
  state: number;
}

/** Calls each field of a message's wire form (number, wire type) until it ends. */
function fields(input: Uint8Array, f: (field: number, r: BinaryReader, wireType: number) => boolean): void {
  const r = new BinaryReader(input);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (!f(tag >>> 3, r, tag & 7)) r.skip(tag & 7);
  }
}

/** A message whose only field is string 1 (an id). */
const idMessage: MessageType<string> = {
  encode: (id) => {
    const w = new BinaryWriter();
    if (id) w.uint32(10).string(id);
    return w;
  },
  decode: (input) => {
    let id = "";
    fields(input, (n, r, t) => {
      if (n !== 1 || t !== 2) return false;
      id = r.string();
      return true;
    });
    return id;
  },
};

/** An empty message (requests with no filter, responses with nothing in them). */
const empty: MessageType<Record<string, never>> = {
  encode: () => new BinaryWriter(),
  decode: () => ({}),
};

function writeContainerConfig(c: ContainerConfig, w: BinaryWriter): BinaryWriter {
  w.uint32(10).fork().uint32(10).string(c.name).join(); // metadata { name }
  w.uint32(18).fork().uint32(10).string(c.image).join(); // image { image }
  for (const s of c.command) w.uint32(26).string(s);
  for (const s of c.args) w.uint32(34).string(s);
  w.uint32(90).string(c.logPath); // log_path = 11
  return w;
}

const runPodSandboxRequest: MessageType<{ config: PodSandboxConfig; runtimeHandler: string }> = {
  encode: (m) => {
    const w = new BinaryWriter();
    PodSandboxConfig.encode(m.config, w.uint32(10).fork()).join();
    return w.uint32(18).string(m.runtimeHandler);
  },
  decode: () => {
    throw new Error("a request is never decoded here");
  },
};

const createContainerRequest: MessageType<{ podSandboxId: string; config: ContainerConfig; sandboxConfig: PodSandboxConfig }> = {
  encode: (m) => {
    const w = new BinaryWriter();
    w.uint32(10).string(m.podSandboxId);
    writeContainerConfig(m.config, w.uint32(18).fork()).join();
    PodSandboxConfig.encode(m.sandboxConfig, w.uint32(26).fork()).join();
    return w;
  },
  decode: () => {
    throw new Error("a request is never decoded here");
  },
};

const listPodSandboxResponse: MessageType<PodSandboxItem[]> = {
  encode: () => {
    throw new Error("a response is never encoded here");
  },
  decode: (input) => {
    const items: PodSandboxItem[] = [];
    fields(input, (n, r, t) => {
      if (n !== 1 || t !== 2) return false;
      const item: PodSandboxItem = { id: "", state: 0, runtimeHandler: "" };
      fields(r.bytes(), (m, s, u) => {
        if (m === 1 && u === 2) item.id = s.string();
        else if (m === 3 && u === 0) item.state = s.int32();
        else if (m === 7 && u === 2) item.runtimeHandler = s.string();
        else return false;
        return true;
      });
      items.push(item);
      return true;
    });
    return items;
  },
};

const listContainersResponse: MessageType<ContainerItem[]> = {
  encode: () => {
    throw new Error("a response is never encoded here");
  },
  decode: (input) => {
    const items: ContainerItem[] = [];
    fields(input, (n, r, t) => {
      if (n !== 1 || t !== 2) return false;
      const item: ContainerItem = { id: "", podSandboxId: "", state: 0 };
      fields(r.bytes(), (m, s, u) => {
        if (m === 1 && u === 2) item.id = s.string();
        else if (m === 2 && u === 2) item.podSandboxId = s.string();
        else if (m === 6 && u === 0) item.state = s.int32();
        else return false;
        return true;
      });
      items.push(item);
      return true;
    });
    return items;
  },
};

const method = <Req, Res>(name: string, requestType: MessageType<Req>, responseType: MessageType<Res>): MethodDefinition<Req, Res> => ({
  name,
  requestType,
  responseType,
  requestStream: false,
  responseStream: false,
});

const RuntimeService = {
  fullName: "runtime.v1.RuntimeService",
  methods: {
    runPodSandbox: method("RunPodSandbox", runPodSandboxRequest, idMessage),
    stopPodSandbox: method("StopPodSandbox", idMessage, empty),
    removePodSandbox: method("RemovePodSandbox", idMessage, empty),
    listPodSandbox: method("ListPodSandbox", empty, listPodSandboxResponse),
    createContainer: method("CreateContainer", createContainerRequest, idMessage),
    startContainer: method("StartContainer", idMessage, empty),
    listContainers: method("ListContainers", empty, listContainersResponse),
  },
} as const;

/** containerd's CRI RuntimeService on its gRPC socket (one HTTP/2 connection, as the kubelet's). */
export class CriClient {
  private readonly grpc: GrpcClient;

  constructor(socketPath: string) {
    this.grpc = new GrpcClient(socketPath, { timeoutMs: 120_000 });
  }

  private call<Req, Res>(m: MethodDefinition<Req, Res>, req: Req): Promise<Res> {
    return this.grpc.unary(RuntimeService, m, req);
  }

  runPodSandbox(config: PodSandboxConfig, runtimeHandler: string): Promise<string> {
    return this.call(RuntimeService.methods.runPodSandbox, { config, runtimeHandler });
  }
  createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    return this.call(RuntimeService.methods.createContainer, { podSandboxId, config, sandboxConfig });
  }
  async startContainer(containerId: string): Promise<void> {
    await this.call(RuntimeService.methods.startContainer, containerId);
  }
  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.call(RuntimeService.methods.stopPodSandbox, podSandboxId);
  }
  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.call(RuntimeService.methods.removePodSandbox, podSandboxId);
  }
  listPodSandbox(): Promise<PodSandboxItem[]> {
    return this.call(RuntimeService.methods.listPodSandbox, {});
  }
  listContainers(): Promise<ContainerItem[]> {
    return this.call(RuntimeService.methods.listContainers, {});
  }
  close(): void {
    this.grpc.close();
  }
}
