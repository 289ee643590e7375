// Shows the refusal when /login?error=1 (no inline script: the page's CSP allows none).
if (new URLSearchParams(location.search).has('error')) document.getElementById('login-error')!.hidden = false;
