// A minimal MCP Apps host for the browser tests (tests/test_view.py), built on ext-apps's own
// host side (AppBridge). It renders a view as hosts do: in a sandboxed iframe (opaque origin)
// under a CSP made from the resource's _meta.ui.csp, and it forwards the view's tools/call and
// resources/read to window.mcpRequest, which the test binds to a real mcp.Client.

import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

interface ViewCsp {
  resourceDomains?: string[];
  connectDomains?: string[];
}

declare global {
  interface Window {
    mcpRequest(method: string, params: unknown): Promise<any>;
    mountView(html: string, csp: ViewCsp, toolInput: Record<string, unknown>, toolResult: unknown): Promise<void>;
    hostLog: string[];
  }
}

window.hostLog = [];

/** The CSP the MCP Apps spec has hosts apply: nothing from the network but the declared domains. */
function policy(csp: ViewCsp): string {
  const resources = (csp.resourceDomains ?? []).join(" ");
  const connect = (csp.connectDomains ?? []).join(" ");
  return [
    "default-src 'none'",
    `script-src 'unsafe-inline' ${resources}`,
    `style-src 'unsafe-inline' ${resources}`,
    `img-src data: blob: ${resources}`,
    `media-src data: blob: ${resources}`,
    `font-src ${resources}`,
    `connect-src ${connect || "'none'"}`,
  ].join("; ");
}

window.mountView = async (html, csp, toolInput, toolResult) => {
  const meta = `<meta http-equiv="Content-Security-Policy" content="${policy(csp)}">`;
  const iframe = document.createElement("iframe");
  iframe.setAttribute("sandbox", "allow-scripts");
  iframe.srcdoc = html.replace("<head>", `<head>${meta}`);
  document.body.replaceChildren(iframe);
  const bridge = new AppBridge(
    null,
    { name: "kling-video-mcp-test-host", version: "1.0.0" },
    { serverTools: {}, serverResources: {}, openLinks: {} },
    { hostContext: { theme: "light" } },
  );
  bridge.oncalltool = async (params) => {
    window.hostLog.push(`tools/call ${params.name}`);
    return window.mcpRequest("tools/call", params);
  };
  bridge.onreadresource = async (params) => {
    window.hostLog.push(`resources/read ${params.uri}`);
    return window.mcpRequest("resources/read", params);
  };
  bridge.onopenlink = async (params) => {
    window.hostLog.push(`open ${params.url}`);
    return {};
  };
  bridge.oninitialized = () => {
    void bridge.sendToolInput({ arguments: toolInput }).then(() => bridge.sendToolResult(toolResult as never));
  };
  await bridge.connect(new PostMessageTransport(iframe.contentWindow!, iframe.contentWindow!));
};
