// A static file server for the page on localhost, with the headers that let the page share
// memory with its worker (Stop). The tests use an ephemeral port; run it to try the page:
//     node web/test/serve.mjs [port]        # then open the URL it prints
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream',
};

export async function serve(dir, port = 0) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const file = join(dir, path === '/' ? 'index.html' : path);
    if (!file.startsWith(dir) || !TYPES[extname(file)]) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      // Cross-origin isolation: the page may then share memory with its worker (the Stop flag).
      res
        .writeHead(200, {
          'content-type': TYPES[extname(file)],
          'cross-origin-opener-policy': 'same-origin',
          'cross-origin-embedder-policy': 'require-corp',
        })
        .end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => server.close() };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const { url } = await serve(web, Number(process.argv[2] ?? 8000));
  console.log(`serving ${web} at ${url} (Ctrl-C stops)`);
}
