// Scenario B of the workflow reference: @upstash/workflow's workflows served by express 5, as a
// user's app would serve them, driven by tests/workflows/test_ts_sdk.py against `relay dev`.
// env: PORT, RECORD_FILE (JSON lines of what the steps saw, appended here), QSTASH_URL,
// QSTASH_TOKEN and both signing keys (the SDK verifies every delivery with them).
// POST /client/<op> runs the SDK's own Client (trigger, notify, getWaiters, cancel, logs) with
// the JSON body as its argument and answers {result} or {error}.
import { appendFileSync } from "node:fs";
import express from "express";
import { Client } from "@upstash/workflow";
import { createWorkflow, serve, serveMany } from "@upstash/workflow/express";

const { PORT, RECORD_FILE } = process.env;
const record = (kind, data = {}) =>
  appendFileSync(RECORD_FILE, JSON.stringify({ kind, time: Date.now(), ...data }) + "\n");

const app = express();
app.use(express.json()); // the adapter re-serializes req.body: relay's JSON must be compact

// Every request to a workflow route, with the status it got (a failed signature check is a 4xx/5xx).
app.use((req, res, next) => {
  if (!req.path.startsWith("/client/")) {
    res.on("finish", () =>
      record("http", {
        path: req.path,
        status: res.statusCode,
        signed: Boolean(req.headers["upstash-signature"]),
        runId: req.headers["upstash-workflow-runid"] ?? null,
      }),
    );
  }
  next();
});

const seen = (context) => ({
  runId: context.workflowRunId,
  trace: context.headers.get("x-trace"),
  labels: context.labels,
  payload: context.requestPayload,
});

// run → sleep → two parallel runs → run; the answer becomes the run's response.
app.use(
  "/wf",
  serve(async (context) => {
    const a = await context.run("a", () => {
      record("a", seen(context));
      return "A";
    });
    await context.sleep("nap", 1);
    const [b1, b2] = await Promise.all([
      context.run("b1", () => (record("b1", seen(context)), "one")),
      context.run("b2", () => (record("b2", seen(context)), "two")),
    ]);
    await context.run("c", () => record("c", { ...seen(context), a, b1, b2 }));
    return { result: "ok" };
  }),
);

// A step that throws: after the run's retries, the failure function gets status and payload.
app.use(
  "/wf-fail",
  serve(
    async (context) => {
      await context.run("fine", () => (record("fine", seen(context)), 1));
      await context.run("boom", () => {
        record("boom", seen(context));
        throw new Error("boom-from-ts");
      });
    },
    {
      failureFunction: async ({ context, failStatus, failResponse, failStack }) => {
        record("failure", { ...seen(context), failStatus, failResponse, stack: Boolean(failStack) });
        return "handled";
      },
    },
  ),
);

// waitForEvent with a timeout (payload: {eventId, timeout, sleep?}); a sleep first lets a
// run-scoped notify arrive before the wait starts (look-back).
app.use(
  "/wf-wait",
  serve(async (context) => {
    const { eventId, timeout, sleep } = context.requestPayload;
    if (sleep) await context.sleep("pre", sleep);
    const { eventData, timeout: timedOut } = await context.waitForEvent("wait", eventId, {
      timeout,
    });
    await context.run("after", () =>
      record("waited", { ...seen(context), eventData: eventData ?? null, timedOut }),
    );
  }),
);

// createWebhook + waitForWebhook: the test calls the webhook URL the first step recorded.
app.use(
  "/wf-hook",
  serve(async (context) => {
    const webhook = await context.createWebhook("hook");
    await context.run("announce", () => record("hook-url", { ...seen(context), url: webhook.webhookUrl }));
    const { request, timeout } = await context.waitForWebhook("wait-hook", webhook, "10s");
    await context.run("after-hook", async () =>
      record("hooked", {
        ...seen(context),
        timedOut: timeout,
        method: request?.method ?? null,
        body: request ? await request.text() : null,
      }),
    );
  }),
);

// A sleep (payload: {sleep: seconds}), to be cancelled while it sleeps.
app.use(
  "/wf-long",
  serve(async (context) => {
    await context.run("start", () => record("long-start", seen(context)));
    await context.sleep("long", context.requestPayload.sleep);
    await context.run("never", () => record("long-woke", seen(context)));
  }),
);

// context.invoke of a child and of a failing child, served by serveMany at /many/<workflowId>.
const child = createWorkflow(async (context) => {
  const doubled = await context.run("double", () => {
    record("child", seen(context));
    return context.requestPayload.n * 2;
  });
  return { doubled };
});
const failingChild = createWorkflow(async (context) => {
  await context.run("explode", () => {
    record("failing-child", seen(context));
    throw new Error("child-boom");
  });
});
const parent = createWorkflow(async (context) => {
  const ok = await context.invoke("call-child", { workflow: child, body: { n: 4 } });
  const failed = await context.invoke("call-failing", {
    workflow: failingChild,
    body: { n: 5 },
    retries: 0,
  });
  await context.run("after-invoke", () => record("parent", { ...seen(context), ok, failed }));
  return "parent-done";
});
// A child cancelled while it sleeps: its invoker gets isCanceled.
const sleepyChild = createWorkflow(async (context) => {
  await context.run("nod", () => record("sleepy-child", seen(context)));
  await context.sleep("doze", 30);
});
const cancelParent = createWorkflow(async (context) => {
  const result = await context.invoke("call-sleepy", { workflow: sleepyChild, body: {} });
  await context.run("after-cancel", () => record("cancel-parent", { ...seen(context), result }));
});
app.use("/many", serveMany({ parent, child, failingChild, sleepyChild, cancelParent }));

// The SDK's Client, for the test to drive (dlq<Op>: client.dlq.<op>).
const client = new Client({ baseUrl: process.env.QSTASH_URL, token: process.env.QSTASH_TOKEN });
const ops = {
  trigger: (args) => client.trigger(args),
  notify: (args) => client.notify(args),
  getWaiters: (args) => client.getWaiters(args),
  cancel: (args) => client.cancel(args),
  logs: (args) => client.logs(args),
  dlqList: (args) => client.dlq.list(args),
  dlqResume: (args) => client.dlq.resume(args),
  dlqRestart: (args) => client.dlq.restart(args),
  dlqDelete: (args) => client.dlq.delete(args),
  dlqCallback: (args) => client.dlq.retryFailureFunction(args),
};
app.post("/client/:op", async (req, res) => {
  try {
    res.json({ result: (await ops[req.params.op](req.body)) ?? null });
  } catch (error) {
    res.json({ error: String(error?.message ?? error) });
  }
});

// PORT 0: a free port, the one this line prints.
const server = app.listen(Number(PORT), "127.0.0.1", () =>
  console.log(`listening ${server.address().port}`),
);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
