// Streams a completion through the split from code: the front layers run here, the rest in the cloud.
import { DEFAULT_MODEL_DIR, EdgeAgent, openModel, startCloud } from 'splitllm';

const model = await openModel(process.argv[2] ?? DEFAULT_MODEL_DIR);
const cloud = await startCloud(model); // or connect to one elsewhere: cloud: 'wss://cloud.example:8443'
const agent = await EdgeAgent.create({ model, cloud: cloud.url, split: 2, codec: 'ts-tabq' });
for await (const piece of agent.stream({ prompt: 'ROMEO:', maxTokens: 40, sampling: { temperature: 0 } })) process.stdout.write(piece);
process.stdout.write('\n');
await agent.close();
await cloud.close();
