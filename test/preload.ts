// Loaded before every test file (bunfig.toml [test] preload): hooks here run once for the whole
// run, after every file.
import { afterAll } from "bun:test";
import { removeTempDirs } from "./support/temp-dirs.ts";

afterAll(removeTempDirs);
