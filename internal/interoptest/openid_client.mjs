// Runs openid-client (npm) doing a client_credentials grant with
// private_key_jwt against ROTAGATE_TOKEN_URL, and prints one JSON line:
// {"status": <HTTP status or 0>, "access_token"?: "...", "error"?: "..."}.
// Input, all from the environment: ROTAGATE_TOKEN_URL, ROTAGATE_ISSUER (the
// assertion's aud: oauth4webapi puts the issuer there), ROTAGATE_CLIENT_ID,
// ROTAGATE_PRIVATE_JWK (the client's private key as a JWK), ROTAGATE_ALG,
// ROTAGATE_KID (may be empty). The key is never printed.
import * as client from 'openid-client';
import * as jose from 'jose';

const env = process.env;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
try {
  const key = await jose.importJWK(JSON.parse(env.ROTAGATE_PRIVATE_JWK), env.ROTAGATE_ALG);
  const config = new client.Configuration(
    { issuer: env.ROTAGATE_ISSUER, token_endpoint: env.ROTAGATE_TOKEN_URL },
    env.ROTAGATE_CLIENT_ID,
    {},
    client.PrivateKeyJwt(env.ROTAGATE_KID ? { key, kid: env.ROTAGATE_KID } : key),
  );
  if (env.ROTAGATE_TOKEN_URL.startsWith('http://')) {
    client.allowInsecureRequests(config);
  }
  const tokens = await client.clientCredentialsGrant(config, {});
  out({ status: 200, access_token: tokens.access_token });
} catch (e) {
  out({ status: e.status ?? 0, error: e.error ?? e.code ?? String(e.message).slice(0, 200) });
}
