// containerd 1.7 and later call the task API by the name containerd.task.v3.Task. Its
// messages are v2's field for field (the .proto differs in its package line only), and a
// ttrpc request names only the service and the method, so v3 is v2's definition under the
// other name: one set of message codecs in the server's bundle, not two.

import { TaskDefinition as TaskV2 } from "./gen/containerd/runtime/task/v2/shim.ts";

export const TaskV3 = { ...TaskV2, fullName: "containerd.task.v3.Task" } as const;
