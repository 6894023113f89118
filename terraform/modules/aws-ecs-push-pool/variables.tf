variable "pool_name" {
  type        = string
  description = "Name of the skylane pool (an `ecs:push` pool). Tagged as `skylane-pool` on every taggable resource and used in the role descriptions."

  validation {
    condition     = can(regex("\\S", var.pool_name))
    error_message = "The pool_name variable must not be empty."
  }
}

variable "resource_slug" {
  type        = string
  default     = null
  description = "The pool's name as a part of AWS resource names (what `slug(pool_name)` in src/skylane/provisioning/aws.py returns; `skylane pool provision --emit-terraform` writes it). Null: the pool name itself, which must then already be a valid slug (lowercase letters, digits and dashes, not starting or ending with a dash, at most 40 characters)."

  validation {
    condition     = var.resource_slug == null || can(regex("^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$", var.resource_slug))
    error_message = "The resource_slug variable must be 1 to 40 lowercase letters, digits and dashes, not starting or ending with a dash."
  }
}

variable "create_vpc" {
  type        = bool
  default     = false
  description = "Create a VPC with two public subnets in two availability zones, an internet gateway, a route table and a security group without ingress (the provisioner's `--create-vpc`). False: adopt the region's default VPC and all of its subnets, which are only read, never changed."
}

variable "vpc_cidr" {
  type        = string
  default     = "10.60.0.0/16"
  description = "CIDR block of the VPC made with create_vpc. As the provisioner does, the two subnets are `A.B.0.0/20` and `A.B.16.0/20`, A.B being the first two octets of this block; so the block must start at A.B.0.0 with a prefix length from /16 to /19."

  validation {
    condition = try(
      tonumber(split("/", var.vpc_cidr)[1]) >= 16 &&
      tonumber(split("/", var.vpc_cidr)[1]) <= 19 &&
      cidrhost(var.vpc_cidr, 0) == split("/", var.vpc_cidr)[0] &&
      split(".", var.vpc_cidr)[2] == "0",
      false
    )
    error_message = "The vpc_cidr variable must be an IPv4 block A.B.0.0/N with N from 16 to 19 (e.g. 10.60.0.0/16), so that the subnets A.B.0.0/20 and A.B.16.0/20 fit in it."
  }
}

variable "untagged_image_days" {
  type        = number
  default     = 14
  description = "Days after which the ECR lifecycle policy expires untagged images."

  validation {
    condition     = var.untagged_image_days >= 1 && floor(var.untagged_image_days) == var.untagged_image_days
    error_message = "The untagged_image_days variable must be a whole number of days, at least 1."
  }
}

variable "log_retention_days" {
  type        = number
  default     = 30
  description = "Retention of the runs' CloudWatch log group, in days (one of the values CloudWatch Logs accepts; the provisioner always sets one, so 0/never expire is not offered)."

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log_retention_days variable must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "dispatcher_principal_arn" {
  type        = string
  default     = null
  description = "ARN of the AWS principal allowed to assume the dispatcher role (the control plane's role or user; the provisioner's `--control-plane`). Null: the account root, i.e. whatever the account's IAM policies allow."

  validation {
    condition     = var.dispatcher_principal_arn == null || can(regex("^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z0-9_+=,.@/:-]+$", var.dispatcher_principal_arn))
    error_message = "The dispatcher_principal_arn variable must be an IAM or STS principal ARN (arn:aws:iam::123456789012:role/NAME, ...)."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags on every taggable resource, besides `skylane-pool` (and `Name` on EC2 resources). Tags the provisioner did not set show as changes on resources imported from `skylane pool provision`."

  validation {
    condition     = !contains(keys(var.tags), "skylane-pool")
    error_message = "The tags variable must not set skylane-pool: the module sets it to pool_name."
  }
}
