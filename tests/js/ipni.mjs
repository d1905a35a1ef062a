// Ask an IPNI find server for the providers of CIDs with the real IPNI content-routing client
// (@libp2p/ipni-content-routing) and print what the client yields.
//
//   node ipni.mjs <base-url> <cid>...
//
// For each CID, one line goes to stdout:
//   {"cid": "...", "providers": [{"id": "12D3...", "multiaddrs": ["/ip4/..."], "protocols": []}],
//    "requests": [{"url": "...", "accept": "...", "status": 200, "contentType": "...",
//                  "body": "<the body as the server sent it>"}],
//    "errors": ["<what the client logged as an error>"]}
// The client swallows every failure (it logs it and yields nothing), so its error log is
// captured per CID, and `fetch` is wrapped to record each request and a copy of each answer:
// the Python test can then tell "found nothing" from "failed", and see what the server sent.
import { CID } from 'multiformats/cid'

const [base, ...cids] = process.argv.slice(2)
if (base == null || cids.length === 0) {
  console.error('usage: node ipni.mjs <base-url> <cid>...')
  process.exit(2)
}

// The client logs through `debug`, which reads DEBUG when it loads: enable its error log first.
process.env.DEBUG = 'ipni-content-routing:error'
const { ipniContentRouting } = await import('@libp2p/ipni-content-routing')

let current = null
const realFetch = globalThis.fetch
globalThis.fetch = async (resource, init = {}) => {
  const response = await realFetch(resource, init)
  const request = {
    url: String(resource),
    accept: new Headers(init.headers).get('accept'),
    status: response.status,
    contentType: response.headers.get('content-type')
  }
  current.requests.push(request)
  if (response.body == null) return response
  const [forClient, forUs] = response.body.tee()
  current.bodies.push(new Response(forUs).text().then((text) => { request.body = text }))
  const { status, statusText, headers } = response
  return new Response(forClient, { status, statusText, headers })
}

const stderrWrite = process.stderr.write.bind(process.stderr)
process.stderr.write = (chunk, ...rest) => {
  if (current != null) current.errors.push(String(chunk).trim())
  return stderrWrite(chunk, ...rest)
}

const routing = ipniContentRouting(base)()
routing.start()
try {
  for (const cid of cids) {
    current = { requests: [], bodies: [], errors: [] }
    const providers = []
    for await (const info of routing.findProviders(CID.parse(cid))) {
      providers.push({
        id: info.id.toString(),
        multiaddrs: info.multiaddrs.map((addr) => addr.toString()),
        protocols: info.protocols
      })
    }
    await Promise.all(current.bodies)
    const { requests, errors } = current
    current = null
    console.log(JSON.stringify({ cid, providers, requests, errors }))
  }
} finally {
  routing.stop()
}
