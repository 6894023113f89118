variable "pool_name" {
  type        = string
  description = "The pool the worker takes runs of (`skylane worker start --pool POOL_NAME`): an `ecs` pull pool, or an `ecs:push` pool with `fallback: worker`."

  validation {
    condition     = can(regex("\\S", var.pool_name))
    error_message = "The pool_name variable must not be empty."
  }
}

variable "resource_slug" {
  type        = string
  default     = null
  description = "The pool's name as a part of AWS resource names (as `slug()` in src/skylane/provisioning/aws.py). Null: the pool name itself, which must then be 1 to 40 lowercase letters, digits and dashes, not starting or ending with a dash."

  validation {
    condition     = var.resource_slug == null || can(regex("^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$", var.resource_slug))
    error_message = "The resource_slug variable must be 1 to 40 lowercase letters, digits and dashes, not starting or ending with a dash."
  }
}

variable "image" {
  type        = string
  description = "The skylane control-plane image the worker runs (its ENTRYPOINT must be `skylane`), e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/skylane:TAG."

  validation {
    condition     = can(regex("^\\S+$", var.image))
    error_message = "The image variable must be a non-empty image reference without spaces."
  }
}

variable "api_url" {
  type        = string
  description = "URL of the skylane API the worker talks to (SKYLANE_API_URL)."

  validation {
    condition     = can(regex("^https?://\\S+$", var.api_url))
    error_message = "The api_url variable must be an http:// or https:// URL."
  }
}

variable "api_key_secret_arn" {
  type        = string
  description = "ARN of the Secrets Manager secret whose value is the worker's API key (a key with the `worker` scope). It is given to the container as SKYLANE_API_KEY by reference; the execution role may read this secret and no other."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.api_key_secret_arn))
    error_message = "The api_key_secret_arn variable must be a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX)."
  }
}

variable "api_key_kms_key_arn" {
  type        = string
  default     = null
  description = "ARN of the customer-managed KMS key the API key secret is encrypted with, if any: the execution role then may decrypt with it, through Secrets Manager only. Null: the secret uses the AWS-managed key."

  validation {
    condition     = var.api_key_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.api_key_kms_key_arn))
    error_message = "The api_key_kms_key_arn variable must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "cluster_arn" {
  type        = string
  description = "ARN of the ECS cluster the pool's runs go to (the push-pool module's cluster_arn). The worker may run, describe, stop and list tasks on it only; its own service runs there too unless service_cluster_arn is set."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9_-]+$", var.cluster_arn))
    error_message = "The cluster_arn variable must be an ECS cluster ARN (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME)."
  }
}

variable "pass_role_arns" {
  type        = list(string)
  description = "The exact role ARNs the worker may pass to ECS tasks (the push-pool module's execution_role_arn and task_role_arn). Never a wildcard."

  validation {
    condition = length(var.pass_role_arns) > 0 && alltrue([
      for arn in var.pass_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$", arn))
    ])
    error_message = "The pass_role_arns variable must list at least one exact IAM role ARN, without wildcards."
  }
}

variable "log_group_arn" {
  type        = string
  description = "ARN of the runs' CloudWatch log group (the push-pool module's log_group_arn), whose streams the worker reads."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:logs:[a-z0-9-]+:[0-9]{12}:log-group:[A-Za-z0-9_./#-]+$", trimsuffix(var.log_group_arn, ":*")))
    error_message = "The log_group_arn variable must be a CloudWatch Logs log group ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME)."
  }
}

variable "assume_role_arns" {
  type        = list(string)
  default     = []
  description = "Roles the worker may assume (sts:AssumeRole): the pool's credentials reference `role_arn` when it has one, e.g. the push-pool module's dispatcher_role_arn for an `ecs:push` pool with `fallback: worker` (the worker still uses the pool's credentials reference). Empty: the worker acts with its task role only."

  validation {
    condition = alltrue([
      for arn in var.assume_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$", arn))
    ])
    error_message = "The assume_role_arns variable must list exact IAM role ARNs, without wildcards."
  }
}

variable "service_cluster_arn" {
  type        = string
  default     = null
  description = "ARN of the ECS cluster the worker's own service runs on. Null: cluster_arn."

  validation {
    condition     = var.service_cluster_arn == null || can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9_-]+$", var.service_cluster_arn))
    error_message = "The service_cluster_arn variable must be an ECS cluster ARN (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME)."
  }
}

variable "subnets" {
  type        = list(string)
  description = "Subnet IDs the worker's task runs in (it must reach the skylane API, ECR and the AWS APIs)."

  validation {
    condition     = length(var.subnets) > 0 && alltrue([for s in var.subnets : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "The subnets variable must list at least one subnet ID (subnet-...)."
  }
}

variable "security_groups" {
  type        = list(string)
  default     = []
  description = "Security group IDs of the worker's task. Empty: the VPC's default security group."

  validation {
    condition     = alltrue([for g in var.security_groups : can(regex("^sg-[0-9a-f]+$", g))])
    error_message = "The security_groups variable must list security group IDs (sg-...)."
  }
}

variable "assign_public_ip" {
  type        = bool
  default     = true
  description = "Give the worker's task a public IP (needed in public subnets without a NAT gateway to pull the image and reach the API)."
}

variable "desired_count" {
  type        = number
  default     = 1
  description = "Number of worker tasks (each claims runs; every run is still submitted once)."

  validation {
    condition     = var.desired_count >= 0 && floor(var.desired_count) == var.desired_count
    error_message = "The desired_count variable must be a whole number, 0 or more."
  }
}

variable "cpu" {
  type        = number
  default     = 256
  description = "Fargate task CPU units (256, 512, 1024, 2048, 4096, 8192 or 16384); memory must be a valid Fargate combination with it."

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "The cpu variable must be one of 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  type        = number
  default     = 512
  description = "Fargate task memory in MiB, valid for cpu: 256: 512, 1024, 2048; 512: 1024 to 4096; 1024: 2048 to 8192; 2048: 4096 to 16384 (steps of 1024); 4096: 8192 to 30720 (steps of 1024); 8192: 16384 to 61440 (steps of 4096); 16384: 32768 to 122880 (steps of 8192)."

  validation {
    condition     = var.memory >= 512 && floor(var.memory) == var.memory
    error_message = "The memory variable must be a whole number of MiB, at least 512."
  }
}

variable "cpu_architecture" {
  type        = string
  default     = "X86_64"
  description = "CPU architecture of the worker's task: X86_64 or ARM64 (the image must be built for it)."

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "The cpu_architecture variable must be X86_64 or ARM64."
  }
}

variable "worker_name" {
  type        = string
  default     = null
  description = "The worker's unique name in the pool (`--name`). Null: skylane's default (HOSTNAME-PID), unique per task. Only with desired_count = 1."

  validation {
    condition     = var.worker_name == null || can(regex("^\\S+$", var.worker_name))
    error_message = "The worker_name variable must be a non-empty name without spaces."
  }
}

variable "limit" {
  type        = number
  default     = null
  description = "Most runs of each worker task active at once (`--limit`). Null: no cap."

  validation {
    condition     = var.limit == null || try(var.limit >= 1 && floor(var.limit) == var.limit, false)
    error_message = "The limit variable must be a whole number, at least 1."
  }
}

variable "log_level" {
  type        = string
  default     = "info"
  description = "The worker's log level (`--log-level`): critical, error, warning, info or debug."

  validation {
    condition     = contains(["critical", "error", "warning", "info", "debug"], var.log_level)
    error_message = "The log_level variable must be one of critical, error, warning, info, debug."
  }
}

variable "environment" {
  type        = map(string)
  default     = {}
  description = "Extra environment variables of the worker container (e.g. SKYLANE_PUBLIC_API_URL). Plain values only: never a secret; SKYLANE_API_URL and SKYLANE_API_KEY are set by the module."

  validation {
    condition     = !contains(keys(var.environment), "SKYLANE_API_KEY") && !contains(keys(var.environment), "SKYLANE_API_URL")
    error_message = "The environment variable must not set SKYLANE_API_KEY (use api_key_secret_arn) nor SKYLANE_API_URL (use api_url)."
  }
}

variable "stop_timeout" {
  type        = number
  default     = 120
  description = "Seconds the worker has after SIGTERM to hand back its claims and finish the submissions in flight before it is killed (Fargate allows 2 to 120)."

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120 && floor(var.stop_timeout) == var.stop_timeout
    error_message = "The stop_timeout variable must be a whole number of seconds from 2 to 120."
  }
}

variable "log_retention_days" {
  type        = number
  default     = 30
  description = "Retention of the worker's own CloudWatch log group, in days (a value CloudWatch Logs accepts; 0: never expire)."

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log_retention_days variable must be one of 0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags on every taggable resource, besides `skylane-pool`."

  validation {
    condition     = !contains(keys(var.tags), "skylane-pool")
    error_message = "The tags variable must not set skylane-pool: the module sets it to pool_name."
  }
}
