// containerd's identifier rule (pkg/identifiers) for container, exec and namespace ids:
// alphanumerics joined by single ".", "_" or "-", at most 76 characters. It also keeps an id
// from naming a path elsewhere (no "/", no ".."), which matters because ids name directories.

export const VALID_ID = /^(?=.{1,76}$)[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
