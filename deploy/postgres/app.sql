-- Run once by the postgres image at first start (/docker-entrypoint-initdb.d), as the
-- superuser, in database app: pgwitness's own login (not a superuser) and the small
-- schema the README's agent session uses. tests/test_deploy.py runs it on a real cluster.
\set ON_ERROR_STOP on
\getenv pgwitness_password UPSTREAM_LOGIN_PASSWORD
CREATE ROLE pgwitness LOGIN PASSWORD :'pgwitness_password';
GRANT CONNECT ON DATABASE app TO pgwitness;

CREATE TABLE public.customers (id serial PRIMARY KEY, name text);
CREATE TABLE public.orders (
    id serial PRIMARY KEY,
    customer_id int REFERENCES public.customers (id),
    total numeric,
    note text
);
CREATE SCHEMA secret;
CREATE TABLE secret.payroll (id int, salary int);
INSERT INTO public.customers (name) VALUES ('Ada'), ('Grace'), ('Edsger');
INSERT INTO public.orders (customer_id, total, note) VALUES
    (1, 10.50, 'first'), (1, 99.00, NULL), (2, 5.25, 'rush'), (3, 42.00, 'gift');
INSERT INTO secret.payroll VALUES (1, 100000), (2, 120000), (3, 90000);

-- The proxy's login may do what any grant could need; each grant's scopes narrow it.
GRANT USAGE ON SCHEMA secret TO pgwitness;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, secret TO pgwitness;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO pgwitness;
