// The screening room: an MCP Apps view of kling-video-mcp's tasks.
//
// One task: a player of its clip (the server's small preview proxy) with the clip's facts,
// cost and prompt, or live status and progress while it renders, or Confirm/Decline while it
// awaits the person's yes. Several tasks (check_task(task_ids)): a storyboard grid, one card per
// shot in order, refreshed through check_task until all are done, and "make the final cut".
//
// Media: over HTTP the server puts signed, expiring links in the result's _meta (the view's CSP
// names the server's origin); otherwise, or when a link fails, the preview is read through
// resources/read (kling-video://previews/{task_id}) and played from a blob.

import { App } from "@modelcontextprotocol/ext-apps";

type Status = "queued" | "running" | "succeeded" | "failed" | "awaiting_confirmation" | "declined" | string;

interface ClipFacts {
  duration_seconds: number;
  width: number;
  height: number;
  fps: number | null;
  video_codec: string | null;
  has_audio: boolean;
}

interface Task {
  task_id: string | null;
  status: Status | null;
  provider: string | null;
  mode: string | null;
  model: string | null;
  progress_percent: number | null;
  eta_seconds: number | null;
  estimated_cost_usd: number | null;
  cost_basis: string | null;
  file_path: string | null;
  size_bytes: number | null;
  clip: ClipFacts | null;
  next_check_seconds: number | null;
  message: string;
  error: { code: string; message: string } | null;
  tasks?: Task[] | null;
}

interface Media {
  prompt?: string;
  preview_url?: string;
  clip_url?: string;
}

interface ToolResult {
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
  _meta?: Record<string, unknown>;
  content?: { type: string; text?: string }[];
}

const MEDIA_KEY = "kling-video-mcp/media";
const UNFINISHED = new Set(["queued", "running"]);
const POLL_MIN_SECONDS = 1;
const POLL_MAX_SECONDS = 10;

const app = new App({ name: "kling-video-screening-room", version: "1.0.0" }, {}, { autoResize: true });
const root = document.getElementById("root") as HTMLElement;

let promptFromInput: string | undefined;
let media: Record<string, Media> = {};
let pollTimer: number | undefined;
let generation = 0; // bumps whenever a new result replaces the one shown; stale polls stop
const blobUrls = new Map<string, Promise<string>>();

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function usd(value: number | null): string {
  return value == null ? "unknown" : `$${value.toFixed(2)}`;
}

function seconds(value: number): string {
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

function statusBadge(status: Status | null): HTMLElement {
  const name = status ?? "unknown";
  return el("span", { class: `badge ${name}`, "data-status": name }, name.replace("_", " "));
}

function finished(task: Task): boolean {
  return !UNFINISHED.has(task.status ?? "");
}

/** Where to play a task's preview: the signed link, else a blob read through MCP. */
async function previewSource(taskId: string, preferLink = true): Promise<string> {
  const link = media[taskId]?.preview_url;
  if (preferLink && link) return link;
  let pending = blobUrls.get(taskId);
  if (!pending) {
    pending = app.readServerResource({ uri: `kling-video://previews/${taskId}` }).then((read) => {
      const content = read.contents[0];
      if (!content || !("blob" in content)) throw new Error("the preview resource held no video");
      const bytes = Uint8Array.from(atob(content.blob as string), (c) => c.charCodeAt(0));
      return URL.createObjectURL(new Blob([bytes], { type: content.mimeType || "video/mp4" }));
    });
    pending.catch(() => blobUrls.delete(taskId));
    blobUrls.set(taskId, pending);
  }
  return pending;
}

/** Point ``video`` at the task's preview; a signed link that fails falls back to the blob. */
async function attachPreview(video: HTMLVideoElement, taskId: string): Promise<void> {
  video.dataset.taskId = taskId;
  video.src = await previewSource(taskId);
  video.dataset.source = video.src.startsWith("blob:") ? "resource" : "link";
  video.addEventListener("error", async () => {
    if (video.dataset.source !== "link") return;
    video.dataset.source = "resource";
    video.src = await previewSource(taskId, false);
  });
}

/** Call a server tool through the host; a refused call comes back as an error result to show. */
async function callTool(name: string, args: Record<string, unknown>): Promise<ToolResult> {
  try {
    return (await app.callServerTool({ name, arguments: args })) as ToolResult;
  } catch (error) {
    return { isError: true, content: [{ type: "text", text: `${name} could not be called: ${error}` }] };
  }
}

function facts(task: Task): HTMLElement {
  const rows: [string, string][] = [];
  if (task.model) rows.push(["Model", task.provider ? `${task.model} on ${task.provider}` : task.model]);
  if (task.clip) {
    const clip = task.clip;
    rows.push(["Clip", `${seconds(clip.duration_seconds)}, ${clip.width}×${clip.height}, ${clip.fps ?? "?"} fps`]);
    rows.push(["Sound", clip.has_audio ? "yes" : "silent"]);
  }
  rows.push(["Cost", `${usd(task.estimated_cost_usd)}${task.cost_basis ? ` (${task.cost_basis})` : ""}`]);
  if (task.size_bytes) rows.push(["File", `${(task.size_bytes / 1e6).toFixed(2)} MB: ${task.file_path}`]);
  const list = el("dl", { class: "facts" });
  for (const [name, value] of rows) list.append(el("dt", {}, name), el("dd", {}, value));
  return list;
}

function promptOf(task: Task): string | undefined {
  return (task.task_id && media[task.task_id]?.prompt) || promptFromInput;
}

function progress(task: Task): HTMLElement {
  const percent = task.progress_percent ?? 0;
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuenow": String(percent) });
  bar.append(el("div", { class: "fill", style: `width: ${Math.max(3, percent)}%` }));
  return bar;
}

function showSingle(task: Task): void {
  const prompt = promptOf(task);
  const head = el("header", {}, el("h1", {}, task.model ?? "Video task"), statusBadge(task.status));
  const section = el("section", { class: "single", "data-task-id": task.task_id ?? "" }, head);
  if (task.status === "succeeded" && task.task_id) {
    const video = el("video", { controls: "", playsinline: "", preload: "auto", class: "player" });
    section.append(video);
    void attachPreview(video, task.task_id).catch((error) => section.append(el("p", { class: "error" }, String(error))));
    const links = media[task.task_id];
    if (links?.clip_url) {
      const open = el("button", { class: "secondary" }, "Open full resolution");
      open.addEventListener("click", () => void app.openLink({ url: links.clip_url as string }));
      section.append(open);
    }
  } else if (task.status === "awaiting_confirmation" && task.task_id) {
    section.append(confirmation(task));
  } else if (UNFINISHED.has(task.status ?? "")) {
    const eta = task.eta_seconds ? `, about ${Math.round(task.eta_seconds)} s left` : "";
    const done = `${Math.round(task.progress_percent ?? 0)}% done`;
    section.append(progress(task), el("p", { class: "live" }, `${task.status}, ${done}${eta}`));
  }
  if (task.error) section.append(el("p", { class: "error" }, `${task.error.code}: ${task.error.message}`));
  if (prompt) section.append(el("blockquote", { class: "prompt" }, prompt));
  section.append(facts(task), el("p", { class: "message" }, task.message));
  root.replaceChildren(section);
  if (!finished(task) && task.task_id) schedule(task.next_check_seconds, { task_id: task.task_id });
}

function confirmation(task: Task): HTMLElement {
  const box = el(
    "div",
    { class: "consent" },
    el("p", {}, `This render is estimated at ${usd(task.estimated_cost_usd)}. Nothing has been sent yet.`),
  );
  for (const decision of ["confirm", "decline"] as const) {
    const button = el("button", { class: decision, "data-decision": decision }, decision === "confirm" ? "Confirm" : "Decline");
    button.addEventListener("click", async () => {
      box.querySelectorAll("button").forEach((b) => ((b as HTMLButtonElement).disabled = true));
      show(await callTool("confirm_spend", { task_id: task.task_id, decision }));
    });
    box.append(button);
  }
  return box;
}

function showGrid(tasks: Task[], summary: string): void {
  const grid = el("ol", { class: "grid" });
  tasks.forEach((task, index) => {
    const card = el(
      "li",
      { class: "card", "data-task-id": task.task_id ?? "", "data-status": task.status ?? "" },
      el("div", { class: "shot" }, `Shot ${index + 1}`, statusBadge(task.status)),
    );
    if (task.status === "succeeded" && task.task_id) {
      const thumb = el("video", { muted: "", preload: "metadata", playsinline: "", class: "thumb" });
      thumb.muted = true;
      thumb.addEventListener("mouseenter", () => void thumb.play().catch(() => undefined));
      thumb.addEventListener("mouseleave", () => thumb.pause());
      card.append(thumb);
      void attachPreview(thumb, task.task_id).catch(() => undefined);
    } else if (UNFINISHED.has(task.status ?? "")) {
      card.append(el("div", { class: "thumb empty" }, `${task.status} ${Math.round(task.progress_percent ?? 0)}%`), progress(task));
    } else {
      card.append(el("div", { class: "thumb empty" }, task.error?.message ?? task.status ?? ""));
    }
    const prompt = task.task_id ? media[task.task_id]?.prompt : undefined;
    if (prompt) card.append(el("p", { class: "card-prompt" }, prompt));
    if (task.clip) card.append(el("p", { class: "card-facts" }, `${seconds(task.clip.duration_seconds)}, ${usd(task.estimated_cost_usd)}`));
    grid.append(card);
  });
  const ids = tasks.map((task) => task.task_id).filter((id): id is string => !!id);
  const allDone = tasks.every(finished);
  const cut = el("button", { class: "final-cut" }, "Make the final cut");
  cut.toggleAttribute("disabled", !allDone || !tasks.every((task) => task.status === "succeeded") || ids.length < 2);
  cut.addEventListener("click", async () => {
    cut.setAttribute("disabled", "");
    cut.textContent = "Assembling…";
    show(await callTool("assemble_video", { task_ids: ids }));
  });
  const total = tasks.reduce((sum, task) => sum + (task.estimated_cost_usd ?? 0), 0);
  root.replaceChildren(
    el(
      "section",
      { class: "storyboard" },
      el("header", {}, el("h1", {}, "Storyboard"), el("span", { class: "summary" }, `${summary} Total ${usd(total)}.`)),
      grid,
      cut,
    ),
  );
  if (!allDone) schedule(Math.min(...tasks.map((task) => task.next_check_seconds ?? POLL_MAX_SECONDS)), { task_ids: ids });
}

/** Ask check_task again after ``after`` seconds (clamped), unless a newer result arrived. */
function schedule(after: number | null, args: Record<string, unknown>): void {
  const mine = generation;
  const delay = Math.min(POLL_MAX_SECONDS, Math.max(POLL_MIN_SECONDS, after ?? 3));
  window.clearTimeout(pollTimer);
  pollTimer = window.setTimeout(async () => {
    try {
      const result = (await app.callServerTool({ name: "check_task", arguments: args })) as ToolResult;
      if (mine === generation) show(result);
    } catch {
      if (mine === generation) schedule(delay * 2, args);
    }
  }, delay * 1000);
}

function show(result: ToolResult): void {
  generation += 1;
  window.clearTimeout(pollTimer);
  const found = result._meta?.[MEDIA_KEY];
  if (found && typeof found === "object") media = { ...media, ...(found as Record<string, Media>) };
  const body = result.structuredContent as Task | undefined;
  if (!body) {
    const text = result.content?.find((block) => block.type === "text")?.text ?? "No result.";
    root.replaceChildren(el("p", { class: result.isError ? "error" : "message" }, text));
  } else if (body.tasks) {
    showGrid(body.tasks, body.message);
  } else if (body.task_id) {
    showSingle(body);
  } else {
    root.replaceChildren(
      el("section", { class: "single" }, el("p", { class: body.error ? "error" : "message" }, body.message)),
    );
  }
  document.body.dataset.ready = "true";
}

app.ontoolinput = (params) => {
  const args = (params.arguments ?? {}) as Record<string, unknown>;
  const shots = args.multi_prompt as { prompt: string }[] | undefined;
  promptFromInput = (args.prompt as string | undefined) ?? shots?.map((shot) => shot.prompt).join(" / ");
  root.replaceChildren(el("p", { class: "message" }, "Waiting for the server…"));
};
app.ontoolresult = (result) => show(result as ToolResult);
app.onhostcontextchanged = (context) => {
  if (context.theme) document.documentElement.dataset.theme = context.theme;
};

await app.connect();
const theme = app.getHostContext()?.theme;
if (theme) document.documentElement.dataset.theme = theme;
