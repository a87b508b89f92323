// A real OpenID provider for the tests: the certified `oidc-provider` package, with one
// confidential client (Quiver) and accounts the test chooses.
//
//   node provider.mjs <redirect_uri>
//
// Prints `ISSUER <url>` once listening. Interactions (login, consent) complete at once as the
// account last set with `POST /test/account` (JSON: sub, email, email_verified, name, groups, region),
// so a test drives the whole authorization-code flow with plain HTTP requests.
import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUri = process.argv[2];
if (!redirectUri) {
  console.error('usage: node provider.mjs <redirect_uri>');
  process.exit(2);
}

const accounts = new Map();
let current = null;

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'quiver',
      client_secret: 'quiver-test-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups', 'region'],
    },
    // Claims go into the ID token itself, as Google, Okta and Entra do.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, sub) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...account }) };
    },
    cookies: { keys: ['quiver-test-cookie-key'] },
  });
  provider.proxy = false;
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/test/account') {
        let body = '';
        for await (const chunk of req) body += chunk;
        const { sub, ...claims } = JSON.parse(body);
        accounts.set(sub, claims);
        current = sub;
        res.writeHead(204).end();
        return;
      }
      if (req.url.startsWith('/interaction/')) {
        const details = await provider.interactionDetails(req, res);
        if (details.prompt.name === 'login') {
          await provider.interactionFinished(req, res, { login: { accountId: current } },
            { mergeWithLastSubmission: false });
          return;
        }
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
        grant.addOIDCScope('openid email profile groups');
        grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups', 'region']);
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, { consent: { grantId } },
          { mergeWithLastSubmission: true });
        return;
      }
      callback(req, res);
    } catch (e) {
      console.error(e);
      res.writeHead(500).end(String(e));
    }
  });
  console.log(`ISSUER ${issuer}`);
});
