# nginx from Debian, for machines that cannot pull the official nginx image (e.g. the CI machine, which reaches
# only package registries): scripts/compose-smoke.sh builds it when NGINX_IMAGE cannot be pulled.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
CMD ["nginx", "-g", "daemon off;"]
