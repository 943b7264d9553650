// Drive @upstash/qstash's schedules and URL groups against a relay, as a Node app would.
// stdin: {"baseUrl", "token", "receiver"}; stdout: JSON of what the SDK returned.
import { Client } from "@upstash/qstash";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { baseUrl, token, receiver } = JSON.parse(input);
const client = new Client({ baseUrl, token });

await client.urlGroups.addEndpoints({
  name: "team",
  endpoints: [{ url: `${receiver}/a` }, { url: `${receiver}/b`, name: "b" }],
});
const published = await client.publishJSON({ urlGroup: "team", body: { hello: "ts" } });

const { scheduleId } = await client.schedules.create({
  destination: `${receiver}/cron?x=1`,
  cron: "* * * * *",
  body: JSON.stringify({ job: "ts" }),
  headers: { "X-Job": "ts" },
  retries: 1,
  scheduleId: "ts-schedule",
});
const toGroup = await client.schedules.create({
  destination: "team",
  cron: "CRON_TZ=America/New_York 0 9 * * 1-5",
  label: ["daily", "team"],
});
const schedule = await client.schedules.get(scheduleId);
await client.schedules.pause({ schedule: scheduleId });
const paused = (await client.schedules.get(scheduleId)).isPaused;
await client.schedules.resume({ schedule: scheduleId });
const listed = (await client.schedules.list()).map((s) => s.scheduleId).sort();
const groupSchedule = await client.schedules.get(toGroup.scheduleId);
await client.schedules.delete(toGroup.scheduleId);
const afterDelete = (await client.schedules.list()).map((s) => s.scheduleId);

console.log(
  JSON.stringify({ published, scheduleId, schedule, paused, listed, groupSchedule, afterDelete }),
);
